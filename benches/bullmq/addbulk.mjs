// W1 peer: BullMQ `addBulk` of --count jobs into a queue under its own key
// prefix (--prefix), chunks of --chunk jobs, --inflight chunks at a time.
// Prints {"jobs", "seconds", "cpu_seconds", "waiting"} on stdout.
import { Queue } from "bullmq";
import { addAll, connection, cpuSeconds, jobs, options, progress } from "./common.mjs";

const opts = options({ count: 1000, prefix: "tqbench-bullmq", redis: "127.0.0.1:6379", chunk: 1000, inflight: 4 });
const redis = connection(opts.redis);
const queue = new Queue("fanout_bench", { connection: redis, prefix: opts.prefix });
await queue.waitUntilReady();
const all = jobs(opts.count, "fanout_bench", new Date().toISOString());
progress(`adding ${opts.count} jobs under ${opts.prefix}`);
const cpuBefore = cpuSeconds();
const start = process.hrtime.bigint();
await addAll(queue, all, opts.chunk, opts.inflight);
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = cpuSeconds() - cpuBefore;
const waiting = await queue.getWaitingCount();
await queue.close();
await redis.quit();
process.stdout.write(`${JSON.stringify({ jobs: opts.count, seconds, cpu_seconds: cpu, waiting })}\n`);
