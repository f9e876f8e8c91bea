// Types of scripts/node-runtime.mjs, for the TypeScript that imports it (vitest.config.ts).
export interface FoundNode {
  path: string;
  version: string;
  source: "PORTICO_NODE" | "this process" | "PATH" | "project";
}
export const REPO_ROOT: string;
export const NODE_MAJOR: number;
export const NODE_VERSION: string;
export function findNode(env?: NodeJS.ProcessEnv): FoundNode | undefined;
export function installNode(log?: (line: string) => void): FoundNode;
export function ensureNode(log?: (line: string) => void): FoundNode;
export function withNodeOnPath(node: FoundNode, env?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
export function runOn(node: FoundNode, args: string[]): Promise<never>;
