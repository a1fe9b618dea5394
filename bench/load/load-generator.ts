/**
 * The load-generator child: closed-loop clients keeping `concurrency` unary
 * calls in flight over one channel (one HTTP/2 connection, as a service
 * would hold), warm-up first, then a measuring window. It runs in its own
 * process, so it competes with the server for the same cores, as a
 * co-located caller would.
 *
 * Clients: a plain @grpc/grpc-js client on the .proto files loaded with
 * @grpc/proto-loader (the default, and the fairer one: the same client for
 * every server), or the Connect gRPC transport from @connectrpc/connect-node.
 */
import { readFile, writeFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { DataKeyService } from "../../gen/matih/kms/v1/data_key_service_pb.js";
import type { LoadGeneratorMessage, RunCommand, RunResult, WorkItem } from "../lib/messages.js";
import { readPki, type PkiFiles } from "../lib/pki.js";
import { loadDataKeyServiceDefinition } from "../lib/protos.js";
import { LatencyRecorder } from "../lib/stats.js";

interface Request {
  readonly tenantId: string;
  readonly keyId: string;
  readonly reference: Buffer | undefined;
  readonly plaintext: Buffer | undefined;
}

interface Answer {
  readonly plaintext: Uint8Array;
  readonly reference?: Uint8Array;
}

/** One call: resolves the answer or rejects with an error whose message names the code. */
type Caller = (request: Request, done: (error: Error | null, answer?: Answer) => void) => void;

interface Client {
  readonly call: Caller;
  close(): void;
}

const definition = loadDataKeyServiceDefinition();

function send(message: LoadGeneratorMessage): void {
  process.send?.(message);
}

function grpcJsClient(port: number, pki: PkiFiles, method: RunCommand["method"]): Client {
  const credentials = grpc.credentials.createSsl(pki.ca, pki.clientKey, pki.clientCert);
  // The server certificate names localhost (and 127.0.0.1); SNI must be a host name.
  const client = new grpc.Client(`127.0.0.1:${port}`, credentials, { "grpc.ssl_target_name_override": "localhost" });
  const attr = method === "generateDataKey" ? definition["GenerateDataKey"] : definition["Decrypt"];
  if (attr === undefined) throw new Error(`no method ${method} in the loaded service definition`);
  const serialize = attr.requestSerialize as (value: object) => Buffer;
  const deserialize = attr.responseDeserialize as (bytes: Buffer) => Answer;
  const call: Caller = (request, done) => {
    const message =
      method === "generateDataKey"
        ? { tenantId: request.tenantId, keyId: request.keyId }
        : { tenantId: request.tenantId, keyId: request.keyId, reference: request.reference };
    client.makeUnaryRequest(attr.path, serialize, deserialize, message, (error: grpc.ServiceError | null, answer?: Answer) => {
      if (error) done(new Error(`${grpc.status[error.code] ?? error.code}: ${error.details}`));
      else done(null, answer);
    });
  };
  return { call, close: () => client.close() };
}

function connectClient(port: number, pki: PkiFiles, method: RunCommand["method"]): Client {
  const transport = createGrpcTransport({
    baseUrl: `https://127.0.0.1:${port}`,
    nodeOptions: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, servername: "localhost" },
  });
  const client = createClient(DataKeyService, transport);
  const call: Caller = (request, done) => {
    const pending: Promise<Answer> =
      method === "generateDataKey"
        ? client.generateDataKey({ tenantId: request.tenantId, keyId: request.keyId })
        : client.decrypt({ tenantId: request.tenantId, keyId: request.keyId, reference: request.reference ?? new Uint8Array() });
    pending.then(
      (answer) => done(null, answer),
      (error: unknown) => done(error instanceof Error ? error : new Error(String(error))),
    );
  };
  // The transport's HTTP/2 session closes itself when idle.
  return { call, close: () => {} };
}

async function readWork(file: string): Promise<Request[]> {
  const items = JSON.parse(await readFile(file, "utf8")) as WorkItem[];
  if (items.length === 0) throw new Error(`${file} holds no work items`);
  return items.map((item) => ({
    tenantId: item.tenantId,
    keyId: item.keyId,
    reference: item.reference === undefined ? undefined : Buffer.from(item.reference, "base64"),
    plaintext: item.plaintext === undefined ? undefined : Buffer.from(item.plaintext, "base64"),
  }));
}

async function run(command: RunCommand): Promise<RunResult> {
  const pki = await readPki(command.tlsDir);
  const work = await readWork(command.workFile);
  const client = command.client === "grpc-js" ? grpcJsClient(command.port, pki, command.method) : connectClient(command.port, pki, command.method);

  const latencies = new LatencyRecorder();
  const errorSamples = new Set<string>();
  const collected = new Map<string, WorkItem>();
  let next = 0;
  let measuring = false;
  let stopped = false;
  let inFlight = 0;
  let completed = 0;
  let errors = 0;
  let wrongAnswers = 0;
  let warmupCalls = 0;
  let drained: (() => void) | undefined;

  const issue = (): void => {
    if (stopped) {
      if (inFlight === 0) drained?.();
      return;
    }
    const request = work[next]!;
    next = next + 1 === work.length ? 0 : next + 1;
    const startedMeasuring = measuring;
    const started = performance.now();
    inFlight++;
    client.call(request, (error, answer) => {
      const elapsed = performance.now() - started;
      inFlight--;
      let failure: string | undefined;
      if (error !== null) failure = error.message;
      else if (answer === undefined || answer.plaintext.length !== 32) failure = "answer without a 32-byte plaintext";
      else if (request.plaintext !== undefined && !request.plaintext.equals(answer.plaintext)) {
        failure = "wrong plaintext";
        if (measuring) wrongAnswers++;
      }
      if (measuring) {
        if (failure === undefined) {
          completed++;
          if (startedMeasuring) latencies.record(elapsed);
        } else {
          errors++;
          if (errorSamples.size < 5) errorSamples.add(failure);
        }
      } else if (!stopped) {
        warmupCalls++;
        if (failure !== undefined && errorSamples.size < 5) errorSamples.add(`(warm-up) ${failure}`);
      }
      if (failure === undefined && command.collectReferencesTo !== undefined && answer?.reference !== undefined) {
        const id = `${request.tenantId}/${request.keyId}`;
        if (!collected.has(id)) {
          collected.set(id, {
            tenantId: request.tenantId,
            keyId: request.keyId,
            reference: Buffer.from(answer.reference).toString("base64"),
            plaintext: Buffer.from(answer.plaintext).toString("base64"),
          });
        }
      }
      issue();
    });
  };

  for (let i = 0; i < command.concurrency; i++) issue();
  await sleep(command.warmupMs);
  measuring = true;
  send({ type: "window-start", phase: command.phase });
  const windowStart = performance.now();
  await sleep(command.durationMs);
  measuring = false;
  const windowMs = performance.now() - windowStart;
  send({ type: "window-end", phase: command.phase });
  stopped = true;
  await new Promise<void>((resolve) => {
    drained = resolve;
    if (inFlight === 0) resolve();
  });
  client.close();

  if (command.collectReferencesTo !== undefined) {
    await writeFile(command.collectReferencesTo, JSON.stringify([...collected.values()]));
  }
  return {
    type: "result",
    phase: command.phase,
    client: command.client,
    method: command.method,
    concurrency: command.concurrency,
    windowMs,
    completed,
    errors,
    wrongAnswers,
    errorSamples: [...errorSamples],
    reqPerSec: (completed * 1000) / windowMs,
    latency: latencies.summary(),
    warmupCalls,
    ...(command.collectReferencesTo === undefined ? {} : { collectedReferences: collected.size }),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

process.on("message", (message: RunCommand) => {
  if (message?.type !== "run") return;
  run(message).then(
    (result) => send(result),
    (error: unknown) => send({ type: "failed", phase: message.phase, message: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
  );
});
process.on("disconnect", () => process.exit(0));
send({ type: "ready" });
