/**
 * What every server child does the same way: announce its port to the
 * orchestrator, answer counter requests, and stop cleanly on SIGTERM (a
 * clean exit is what makes `--cpu-prof` write its profile).
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { create } from "@bufbuild/protobuf";
import { GenerateDataKeyResponseSchema, DecryptResponseSchema } from "../../gen/matih/kms/v1/data_key_service_pb.js";
import type { ServerReady, ServerStats, StatsRequest } from "../lib/messages.js";

/**
 * CPU profiling of exactly the measuring window (not start-up, not idle
 * time between phases): the orchestrator sends "profile-start" when the
 * window opens and "profile-stop" with a file name when it closes.
 */
let profiler: Session | undefined;
process.on("message", (message: { type?: string; file?: string; intervalUs?: number }) => {
  if (message?.type === "profile-start" && profiler === undefined) {
    const session = new Session();
    session.connect();
    profiler = session;
    session.post("Profiler.enable", () =>
      session.post("Profiler.setSamplingInterval", { interval: message.intervalUs ?? 200 }, () => session.post("Profiler.start")),
    );
  } else if (message?.type === "profile-stop" && profiler !== undefined && message.file !== undefined) {
    const session = profiler;
    const file = message.file;
    profiler = undefined;
    session.post("Profiler.stop", (error, result) => {
      if (error === null) writeFileSync(file, JSON.stringify(result.profile));
      session.disconnect();
      process.send?.({ type: "profile-written", file: error === null ? file : undefined });
    });
  }
});

export function announceReady(port: number, description: string): void {
  const message: ServerReady = { type: "ready", port, description };
  process.send?.(message);
}

export function serveCounters(read: () => Record<string, number>, reset: () => void): void {
  process.on("message", (message: StatsRequest) => {
    if (message?.type !== "stats") return;
    const reply: ServerStats = { type: "stats", counters: read() };
    if (message.reset) reset();
    process.send?.(reply);
  });
}

export function stopOnSignal(stop: () => Promise<void>): void {
  let stopping = false;
  const handler = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`stop failed: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
  // The orchestrator died: do not linger.
  process.on("disconnect", handler);
}

/**
 * The constant answers of the no-op servers: the same sizes as real ones (a
 * 32-byte DEK and a 58-byte reference, as for tenant "bench-t000" and key
 * "key-000000"), so every server moves the same bytes.
 */
export const NOOP_PLAINTEXT = Buffer.alloc(32, 0x2a);
export const NOOP_REFERENCE = Buffer.alloc(1 + 16 + 4 + 1 + 10 + 1 + 10 + 16, 0x17);

export const noopGenerateDataKeyResponse = create(GenerateDataKeyResponseSchema, {
  plaintext: NOOP_PLAINTEXT,
  reference: NOOP_REFERENCE,
  dekVersion: 1,
});
export const noopDecryptResponse = create(DecryptResponseSchema, { plaintext: NOOP_PLAINTEXT, dekVersion: 1 });

/**
 * For createKmsServer, which wipes a DataKeyService response's plaintext once
 * it is encoded: a fresh answer per call, as the real service makes one.
 */
export function freshNoopGenerateDataKeyResponse() {
  return create(GenerateDataKeyResponseSchema, { plaintext: Buffer.from(NOOP_PLAINTEXT), reference: NOOP_REFERENCE, dekVersion: 1 });
}
export function freshNoopDecryptResponse() {
  return create(DecryptResponseSchema, { plaintext: Buffer.from(NOOP_PLAINTEXT), dekVersion: 1 });
}

export { argValue } from "../lib/args.js";
