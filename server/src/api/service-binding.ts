import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";

/**
 * A service descriptor with its implementation. The same binding is
 * registered with the Connect router (gRPC, gRPC-Web, Connect) and handed to
 * the REST transcoder, so every transport calls the same code.
 */
export interface ServiceBinding {
  readonly service: DescService;
  readonly impl: object;
  /** Registers the implementation on a Connect router (keeps the precise types). */
  readonly register: (router: { service: <S extends DescService>(s: S, impl: Partial<ServiceImpl<S>>) => unknown }) => void;
}

export function bindService<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): ServiceBinding {
  return { service, impl, register: (router) => void router.service(service, impl) };
}

export type UnaryHandler = (request: unknown, context: HandlerContext) => unknown;

/** The implementation of one unary method, or undefined when the binding lacks it. */
export function unaryHandlerOf(binding: ServiceBinding, method: DescMethod): UnaryHandler | undefined {
  const candidate = (binding.impl as Record<string, unknown>)[method.localName];
  return typeof candidate === "function" ? (candidate.bind(binding.impl) as UnaryHandler) : undefined;
}
