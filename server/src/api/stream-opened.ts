import { createContextKey, type ContextValues } from "@connectrpc/connect";

/**
 * Lets a server-streaming implementation say "the stream is open" before its
 * first message. The REST transcoder answers 200 with its headers at that
 * moment, so a REST client knows its subscription is in place (and a proxy
 * sees a response) even when no message comes for a while; errors found
 * before it still get the usual JSON error body and status. Connect, gRPC and
 * gRPC-Web send their headers with the first message whatever is done here.
 */
export const streamOpenedKey = createContextKey<(() => void) | undefined>(undefined, {
  description: "matih-kms: the transport's 'stream open' callback",
});

/** Tells the transport the stream is open (a no-op where no transport listens). */
export function markStreamOpened(ctx: { readonly values: ContextValues }): void {
  ctx.values.get(streamOpenedKey)?.();
}
