/**
 * @peculiar/x509 registers its parts with tsyringe, which refuses to load
 * unless a `Reflect.getMetadata` polyfill is installed (it reads TypeScript
 * "design:paramtypes" metadata that @peculiar/x509's classes never emit).
 * Rather than adding the `reflect-metadata` package, this installs the small
 * part of that API tsyringe touches — only when nothing provides it already.
 * Import it before "@peculiar/x509".
 */
type MetadataStore = WeakMap<object, Map<string | symbol | undefined, Map<unknown, unknown>>>;

interface ReflectMetadataApi {
  getMetadata?: (key: unknown, target: object, property?: string | symbol) => unknown;
  getOwnMetadata?: (key: unknown, target: object, property?: string | symbol) => unknown;
  hasMetadata?: (key: unknown, target: object, property?: string | symbol) => boolean;
  defineMetadata?: (key: unknown, value: unknown, target: object, property?: string | symbol) => void;
  metadata?: (key: unknown, value: unknown) => (target: object, property?: string | symbol) => void;
}

const api = Reflect as unknown as ReflectMetadataApi;

if (typeof api.getMetadata !== "function") {
  const store: MetadataStore = new WeakMap();
  const own = (target: object, property: string | symbol | undefined, create: boolean): Map<unknown, unknown> | undefined => {
    let byProperty = store.get(target);
    if (byProperty === undefined) {
      if (!create) return undefined;
      byProperty = new Map();
      store.set(target, byProperty);
    }
    let entries = byProperty.get(property);
    if (entries === undefined && create) {
      entries = new Map();
      byProperty.set(property, entries);
    }
    return entries;
  };
  api.defineMetadata = (key, value, target, property) => void own(target, property, true)?.set(key, value);
  api.getOwnMetadata = (key, target, property) => own(target, property, false)?.get(key);
  api.getMetadata = (key, target, property) => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const entries = own(t, property, false);
      if (entries?.has(key) === true) return entries.get(key);
    }
    return undefined;
  };
  api.hasMetadata = (key, target, property) => api.getMetadata?.(key, target, property) !== undefined;
  api.metadata = (key, value) => (target, property) => api.defineMetadata?.(key, value, target, property);
}

export {};
