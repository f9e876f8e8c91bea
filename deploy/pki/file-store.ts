// PKI material as files: `<out>/<dir>/<file>`. In compose each directory is a volume of its own,
// mounted by the one service it belongs to, so a service never sees another's key.
import fs from "node:fs";
import path from "node:path";
import type { PkiStore, StoredFile } from "./ensure.js";
import { CA_DIR, type Owner } from "./plan.js";

export class FilePkiStore implements PkiStore {
  constructor(private readonly root: string) {}

  where(dir: string): string {
    return path.join(this.root, dir);
  }

  async read(dir: string): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    let names: string[];
    try {
      names = await fs.promises.readdir(this.where(dir));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return out;
      throw err;
    }
    for (const name of names) {
      const file = path.join(this.where(dir), name);
      if ((await fs.promises.stat(file)).isFile()) out.set(name, await fs.promises.readFile(file, "utf8"));
    }
    return out;
  }

  async write(dir: string, files: StoredFile[], owner?: Owner): Promise<void> {
    const at = this.where(dir);
    await fs.promises.mkdir(at, { recursive: true });
    // The CA's directory is no one's but this tool's.
    if (dir === CA_DIR) await fs.promises.chmod(at, 0o700);
    for (const f of files) {
      const file = path.join(at, f.name);
      const mode = f.secret ? 0o600 : 0o644;
      let current: string | undefined;
      try {
        current = await fs.promises.readFile(file, "utf8");
      } catch {
        current = undefined;
      }
      if (current !== f.text) {
        // A new file beside the old one, then a rename: a reader sees the old file or the new one,
        // never half of one, and a key is never readable by others even for a moment.
        const tmp = path.join(at, `.${f.name}.${process.pid}.tmp`);
        await fs.promises.writeFile(tmp, f.text, { mode });
        if (owner) await chown(tmp, owner);
        await fs.promises.rename(tmp, file);
      }
      await fs.promises.chmod(file, mode);
      if (owner) await chown(file, owner);
    }
  }
}

async function chown(file: string, owner: Owner): Promise<void> {
  try {
    await fs.promises.chown(file, owner.uid, owner.gid);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EPERM")
      throw new Error(
        `cannot give ${file} to uid ${owner.uid}: run the PKI init as root, or without the owner flags`,
        { cause: err },
      );
    throw err;
  }
}
