// Shared by the BullMQ peers: command-line options, the Redis connection,
// and the one JSON line each script prints on stdout when done.
import IORedis from "ioredis";

/** `--name value` options into an object (numbers parsed). */
export function options(defaults) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 1) {
    if (!argv[i].startsWith("--")) continue;
    const name = argv[i].slice(2);
    const value = argv[i + 1];
    i += 1;
    out[name] = typeof defaults[name] === "number" ? Number(value) : value;
  }
  return out;
}

/** An ioredis connection to `host:port`, as BullMQ wants it. */
export function connection(address) {
  const [host, port] = address.split(":");
  return new IORedis({ host, port: Number(port || 6379), maxRetriesPerRequest: null });
}

/** CPU seconds (user + system) this process has used. */
export function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** Progress on stderr. */
export function progress(message) {
  process.stderr.write(`[bullmq] ${message}\n`);
}

/** `count` jobs' data, shaped like taskqueue's job body. */
export function jobs(count, task, scheduledAt) {
  const out = new Array(count);
  for (let n = 0; n < count; n += 1) {
    const user = `u${String(n).padStart(7, "0")}`;
    out[n] = {
      name: task,
      data: { task_type_id: task, user_id: user, scheduled_at: scheduledAt, attempt: 1 },
    };
  }
  return out;
}

/** Adds `all` jobs with `addBulk` in chunks, `inflight` chunks at a time. */
export async function addAll(queue, all, chunk, inflight) {
  let next = 0;
  let added = 0;
  let lastReport = Date.now();
  async function lane() {
    while (next < all.length) {
      const slice = all.slice(next, next + chunk);
      next += chunk;
      await queue.addBulk(slice);
      added += slice.length;
      if (Date.now() - lastReport > 2000) {
        lastReport = Date.now();
        progress(`addBulk ${added}/${all.length}`);
      }
    }
  }
  await Promise.all(Array.from({ length: inflight }, lane));
}
