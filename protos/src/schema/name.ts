import { z } from "zod";

/** Names become parts of Envoy resource names and stat prefixes, so they are kept plain. */
export const Name = z
  .string()
  .regex(
    /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/,
    "use 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
  );

/** A whole number of milliseconds from 0 to `max`. */
export const Millis = (max: number) =>
  z.number().int("must be a whole number of milliseconds").min(0).max(max);
