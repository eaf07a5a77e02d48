// W2 peer: preloads --count jobs (not timed), then a BullMQ Worker with
// --concurrency POSTs each job's data as JSON to --url (header
// Idempotency-Key: the job id) until all are completed, through node's
// http client with a keep-alive agent (one socket per concurrent job,
// reused), as taskqueue's pooled client does.
// Prints {"jobs", "failed", "seconds", "cpu_seconds"} on stdout.
import http from "node:http";
import { Queue, Worker } from "bullmq";
import { addAll, connection, cpuSeconds, jobs, options, progress } from "./common.mjs";

const opts = options({
  count: 1000,
  prefix: "tqbench-bullmq",
  redis: "127.0.0.1:6379",
  concurrency: 50,
  url: "http://127.0.0.1:9/sink",
});
const queueConnection = connection(opts.redis);
const queue = new Queue("execution_bench", { connection: queueConnection, prefix: opts.prefix });
await queue.waitUntilReady();
progress(`preloading ${opts.count} jobs under ${opts.prefix}`);
await addAll(queue, jobs(opts.count, "execution_bench", new Date().toISOString()), 1000, 4);

const target = new URL(opts.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
// POSTs `body`; resolves with the status once the response is read whole.
const post = (body, key) =>
  new Promise((resolve, reject) => {
    const request = http.request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname + target.search,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
          "idempotency-key": key,
        },
      },
      (response) => {
        response.on("data", () => {});
        response.on("end", () => resolve(response.statusCode));
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(body);
  });

let done = 0;
let failed = 0;
let finish;
const finished = new Promise((resolve) => {
  finish = resolve;
});
const cpuBefore = cpuSeconds();
const start = process.hrtime.bigint();
const worker = new Worker(
  "execution_bench",
  async (job) => {
    const status = await post(JSON.stringify({ job_id: job.id, ...job.data }), String(job.id));
    if (status < 200 || status >= 300) throw new Error(`status ${status}`);
  },
  {
    connection: connection(opts.redis),
    prefix: opts.prefix,
    concurrency: opts.concurrency,
    removeOnComplete: { count: 0 },
  },
);
// A failed job (the call threw or answered an error) is done too, and
// counted apart.
const settle = () => {
  done += 1;
  if (done % 10000 === 0) progress(`done ${done}/${opts.count} (${failed} failed)`);
  if (done === opts.count) finish();
};
worker.on("completed", settle);
worker.on("failed", () => {
  failed += 1;
  settle();
});
await finished;
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = cpuSeconds() - cpuBefore;
// The result first: a worker's close can wait on its blocking Redis
// connection, which is no part of the measure.
process.stdout.write(`${JSON.stringify({ jobs: opts.count, failed, seconds, cpu_seconds: cpu })}\n`);
const closed = Promise.all([worker.close(true), queue.close(), queueConnection.quit()]);
await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 3000))]);
process.exit(0);
