import type { ReencryptionProgress } from "./reencrypt.js";

export interface TerminalProgressOptions {
  /** Default process.stderr. */
  readonly stream?: NodeJS.WriteStream;
  /** Redraws at most this often on a terminal. Default 100 ms. */
  readonly intervalMs?: number;
  /** Off a terminal: one line this often (and at each phase change). Default 5,000 ms. */
  readonly logIntervalMs?: number;
  /** Force the terminal (redrawn line) or the plain (log lines) rendering. */
  readonly tty?: boolean;
}

export interface TerminalProgress {
  /** Pass as the `onProgress` of reencryptDataset. */
  readonly update: (progress: ReencryptionProgress) => void;
  /** Draws the last state and ends the line. */
  finish(): void;
}

/**
 * A progress display for a re-encryption run. On a terminal: one line,
 * redrawn in place, with a bar, records done of the total, the rate, the
 * time left and what remains under each DEK version. Elsewhere (a log, CI):
 * a plain line now and then, so the output stays readable.
 */
export function createTerminalProgress(options: TerminalProgressOptions = {}): TerminalProgress {
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? stream.isTTY === true;
  const interval = tty ? (options.intervalMs ?? 100) : (options.logIntervalMs ?? 5_000);
  let last: ReencryptionProgress | undefined;
  let lastDrawn = -Infinity;
  let pending = false;
  let lastPhase: string | undefined;
  let drewLine = false;

  const draw = (progress: ReencryptionProgress): void => {
    const line = formatProgress(progress, tty ? (stream.columns ?? 100) : Infinity);
    if (tty) {
      stream.write(`\r\u001b[2K${line}`);
      drewLine = true;
    } else {
      stream.write(`${line}\n`);
    }
    lastDrawn = performance.now();
    pending = false;
  };

  return {
    update(progress) {
      last = progress;
      pending = true;
      const phaseChanged = progress.phase !== lastPhase;
      lastPhase = progress.phase;
      if (phaseChanged || performance.now() - lastDrawn >= interval) draw(progress);
    },
    finish() {
      if (last !== undefined && pending) draw(last);
      if (tty && drewLine) stream.write("\n");
    },
  };
}

/** One line describing a run's progress, at most `width` characters. */
export function formatProgress(progress: ReencryptionProgress, width = Infinity): string {
  const seconds = progress.elapsedMs / 1000;
  const rate = seconds > 0 ? progress.scanned / seconds : 0;
  const parts: string[] = [];
  if (progress.total !== undefined && progress.total > 0) {
    const fraction = Math.min(1, progress.scanned / progress.total);
    const barWidth = 20;
    const filled = Math.round(fraction * barWidth);
    parts.push(`[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}%`);
    parts.push(`${thousands(progress.scanned)}/${thousands(progress.total)} records`);
    if (rate > 0 && progress.phase === "reencrypting") parts.push(`ETA ${duration((progress.total - progress.scanned) / rate)}`);
  } else {
    parts.push(`${thousands(progress.scanned)} records`);
  }
  parts.push(`${thousands(progress.reencrypted)} re-encrypted`);
  if (rate > 0) parts.push(`${thousands(Math.round(rate))}/s`);
  if (progress.failed > 0) parts.push(`${thousands(progress.failed)} failed`);
  if (progress.conflicts > 0) parts.push(`${thousands(progress.conflicts)} changed meanwhile`);
  const versions = [...progress.remaining.entries()]
    .filter(([, count]) => count > 0)
    .sort(([a], [b]) => a - b)
    .map(([version, count]) => `v${version}${version === progress.primaryDekVersion ? "*" : ""} ${thousands(count)}`);
  if (versions.length > 0) parts.push(versions.join(" "));
  const line = `${progress.phase.padEnd(12)} ${parts.join(" · ")}`;
  return line.length > width ? `${line.slice(0, Math.max(0, width - 1))}…` : line;
}

function thousands(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? `${minutes}m${String(Math.ceil(seconds % 60)).padStart(2, "0")}s` : `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}
