/**
 * Randomness and SHA-256, injectable: React Native's Hermes has
 * crypto.getRandomValues (with react-native-get-random-values) but no
 * crypto.subtle unless a polyfill provides it, so an app there passes its
 * own provider (e.g. one built on react-native-quick-crypto or expo-crypto).
 */
export interface CryptoProvider {
  /** Fills bytes from a CSPRNG and returns them. */
  getRandomValues(bytes: Uint8Array): Uint8Array;
  /** The SHA-256 digest of data. */
  sha256(data: Uint8Array): Promise<Uint8Array>;
}

/** Minimal shape of Web Crypto the default provider uses. */
interface WebCryptoLike {
  getRandomValues<T extends ArrayBufferView | null>(array: T): T;
  subtle?: { digest(algorithm: string, data: BufferSource): Promise<ArrayBuffer> };
}

/**
 * The Web Crypto provider (globalThis.crypto by default). It fails with a
 * clear message when the platform lacks crypto.subtle rather than falling
 * back to anything weaker.
 */
export function webCryptoProvider(c: WebCryptoLike | undefined = (globalThis as { crypto?: WebCryptoLike }).crypto): CryptoProvider {
  if (!c || typeof c.getRandomValues !== "function") {
    throw new TypeError("tokenwarm: no Web Crypto (globalThis.crypto.getRandomValues); pass a CryptoProvider");
  }
  return {
    getRandomValues: (bytes) => c.getRandomValues(bytes),
    async sha256(data) {
      if (!c.subtle) {
        throw new TypeError("tokenwarm: this platform has no crypto.subtle (React Native without a polyfill); pass a CryptoProvider with sha256");
      }
      return new Uint8Array(await c.subtle.digest("SHA-256", data as BufferSource));
    },
  };
}
