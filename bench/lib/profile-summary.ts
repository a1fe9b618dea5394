/**
 * Where a server's CPU went during a measuring window: a V8 CPU profile's
 * self time grouped by the layer the code belongs to, and the busiest
 * functions. Idle time is left out of the shares.
 */
import { readFileSync } from "node:fs";

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

export interface ProfileSummary {
  readonly file: string;
  readonly wallMs: number;
  readonly busyMs: number;
  /** Layer → milliseconds of self time, busiest first. */
  readonly layers: ReadonlyArray<{ readonly layer: string; readonly ms: number; readonly share: number }>;
  readonly topFunctions: ReadonlyArray<{ readonly name: string; readonly layer: string; readonly ms: number; readonly share: number }>;
}

/** The layer a frame belongs to, from its script URL. Order matters: first match wins. */
export function layerOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === "") {
    if (functionName === "(idle)") return "idle";
    if (functionName === "(garbage collector)") return "GC";
    if (functionName === "(program)") return "V8/native (program)";
    if (functionName === "(root)") return "idle";
    return "native builtins";
  }
  const rules: ReadonlyArray<readonly [RegExp, string]> = [
    [/^wasm:\/\//, "PGlite (WASM PostgreSQL)"],
    [/@electric-sql\/pglite/, "PGlite (JS)"],
    [/node_modules\/kysely/, "kysely"],
    [/node_modules\/(pg|pg-protocol|pg-pool|pg-types)\//, "node-postgres"],
    [/@connectrpc\/connect-node/, "connect-node"],
    [/@connectrpc\/connect\//, "connect (core)"],
    [/@bufbuild\/protobuf/, "protobuf-es"],
    [/@grpc\/grpc-js/, "grpc-js"],
    [/@grpc\/proto-loader|protobufjs/, "protobufjs"],
    [/\/server\/src\/api\//, "kms api layer"],
    [/\/server\/src\//, "kms service/storage/crypto"],
    [/\/gen\//, "generated code"],
    [/\/bench\//, "bench stubs"],
    [/node:internal\/http2|node:http2/, "node http2"],
    [/node:_tls|node:tls|node:internal\/tls/, "node tls"],
    [/node:internal\/streams|node:stream|node:internal\/webstreams/, "node streams"],
    [/node:internal\/crypto|node:crypto/, "node crypto"],
    [/node:net|node:internal\/stream_base_commons|node:internal\/net/, "node net"],
    [/node:internal\/(process\/task_queues|timers)|node:timers/, "node event loop (ticks, timers)"],
    [/node:/, "node (other)"],
  ];
  for (const [pattern, layer] of rules) if (pattern.test(url)) return layer;
  return "other";
}

export function summarizeProfile(file: string, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) byId.set(node.id, node);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    // timeDeltas[i + 1] is the time until the next sample: the time sample i stands for.
    const delta = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta);
  }
  const layers = new Map<string, number>();
  const functions = new Map<string, { layer: string; us: number }>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)!.callFrame;
    const layer = layerOf(frame);
    layers.set(layer, (layers.get(layer) ?? 0) + us);
    const where = frame.url === "" ? "" : ` ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
    const name = `${frame.functionName || "(anonymous)"}${where}`;
    const entry = functions.get(name) ?? { layer, us: 0 };
    entry.us += us;
    functions.set(name, entry);
  }
  layers.delete("idle");
  let busyUs = 0;
  for (const us of layers.values()) busyUs += us;
  const share = (us: number) => (busyUs === 0 ? 0 : us / busyUs);
  return {
    file,
    wallMs: (profile.endTime - profile.startTime) / 1000,
    busyMs: busyUs / 1000,
    layers: [...layers.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([layer, us]) => ({ layer, ms: us / 1000, share: share(us) })),
    topFunctions: [...functions.entries()]
      .filter(([, v]) => v.layer !== "idle")
      .sort((a, b) => b[1].us - a[1].us)
      .slice(0, top)
      .map(([name, v]) => ({ name, layer: v.layer, ms: v.us / 1000, share: share(v.us) })),
  };
}

function shortUrl(url: string): string {
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) return url.slice(nm + "node_modules/".length);
  const src = url.indexOf("/server/src/");
  if (src >= 0) return url.slice(src + 1);
  return url.replace(/^file:\/\//, "");
}

/** Plain-text rendering for the console. */
export function formatProfileSummary(label: string, summary: ProfileSummary, requests: number): string {
  const perReq = (ms: number) => (requests > 0 ? `${((ms * 1000) / requests).toFixed(1)} µs/req` : "");
  const lines = [`  ${label}: ${summary.busyMs.toFixed(0)} ms busy of ${summary.wallMs.toFixed(0)} ms (${perReq(summary.busyMs)})`];
  for (const layer of summary.layers.filter((l) => l.share >= 0.01)) {
    lines.push(`    ${layer.layer.padEnd(34)} ${(layer.share * 100).toFixed(1).padStart(5)} %  ${perReq(layer.ms)}`);
  }
  lines.push("    top functions (self time):");
  for (const fn of summary.topFunctions.slice(0, 10)) {
    lines.push(`      ${(fn.share * 100).toFixed(1).padStart(5)} %  ${fn.name.slice(0, 90)} [${fn.layer}]`);
  }
  return lines.join("\n");
}
