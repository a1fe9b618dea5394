/**
 * Certificates rotate every 90 days (cert-manager rewrites the files, in
 * Kubernetes through a symlink swap). Polling the files' modification times
 * sees both in-place writes and symlink swaps; on a change the new material
 * is loaded into the running server for new connections, with no restart.
 * Unusable new material (a half-written file, a key that does not match) is
 * logged and the old material stays in force; the next poll tries again.
 */
import { readFile, stat } from "node:fs/promises";

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile: string;
}

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer;
}

export interface TlsFileWatcher {
  /** Checks once now (tests call it instead of waiting for the interval). */
  check(): Promise<void>;
  stop(): void;
}

export function watchTlsFiles(
  files: TlsFiles,
  apply: (material: TlsMaterial) => void,
  options: { intervalMs: number; onError: (error: unknown) => void },
): TlsFileWatcher {
  let last: string | undefined;
  let running: Promise<void> | undefined;

  const fingerprint = async () => {
    const stats = await Promise.all([files.certFile, files.keyFile, files.clientCaFile].map((f) => stat(f)));
    return stats.map((s) => `${s.mtimeMs}:${s.size}:${s.ino}`).join("|");
  };

  const checkOnce = async () => {
    try {
      const current = await fingerprint();
      if (last === undefined) {
        last = current;
        return;
      }
      if (current === last) return;
      const [cert, key, ca] = await Promise.all([readFile(files.certFile), readFile(files.keyFile), readFile(files.clientCaFile)]);
      apply({ cert, key, ca });
      last = current;
    } catch (error) {
      options.onError(error);
    }
  };

  const check = () => {
    running ??= checkOnce().finally(() => {
      running = undefined;
    });
    return running;
  };

  void check();
  const timer = setInterval(() => void check(), options.intervalMs);
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}
