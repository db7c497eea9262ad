/**
 * A real campaign server for the tests: a private redis-server and `python -m server` from the
 * repository's venv, on free ports, with a SQLite database in a temporary folder, requiring
 * the bearer token the clients send (a tokens file, no dev mode).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { connect, type Clients } from "../src";

/** The repository root (this file runs from clients/typescript/dist/test). */
export const REPO = resolve(__dirname, "../../../..");
const BIN = join(REPO, ".venv", "bin");
const TOKEN = "test-token";

/** A tokens file granting TOKEN every organization; the server stores only digests. */
function tokensFile(dir: string): string {
  const path = join(dir, "tokens.json");
  const sha256 = createHash("sha256").update(TOKEN).digest("hex");
  writeFileSync(path, JSON.stringify({ tokens: [{ name: "ts-tests", sha256, organizations: "*" }] }));
  return path;
}

export interface RunningServer {
  target: string;
  clients: Clients;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.on("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => done(port));
    });
  });
}

function launch(command: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(command, args, { cwd: REPO, env, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4000); });
  child.on("exit", (code) => {
    if (code && code !== 0) {
      process.stderr.write(`${command} exited with ${code}:\n${stderr}\n`);
    }
  });
  return child;
}

function waitForReady(clients: Clients, timeoutMs: number): Promise<void> {
  return new Promise((done, fail) => {
    clients.campaigns.waitForReady(new Date(Date.now() + timeoutMs), (error) =>
      error ? fail(error) : done());
  });
}

function stopProcess(child: ChildProcess): Promise<void> {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      done();
      return;
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => { clearTimeout(timer); done(); });
    child.kill("SIGTERM");
  });
}

/** Start Redis and the server; resolves once the server accepts calls. */
export async function startServer(): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), "campaigns-ts-"));
  const [redisPort, grpcPort] = [await freePort(), await freePort()];
  const redis = launch(join(BIN, "redis-server"),
    ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--dir", dir], process.env);
  const server = launch(join(BIN, "python"), ["-m", "server"], {
    ...process.env,
    GRPC_HOST: "127.0.0.1",
    DEV_MODE: "",
    AUTH_TOKENS_FILE: tokensFile(dir),
    GRPC_PORT: String(grpcPort),
    DATABASE_URL: `sqlite:///${join(dir, "campaigns.db")}`,
    REDIS_URL: `redis://127.0.0.1:${redisPort}/0`,
    CAMPAIGNS_QUEUE: "typescript-test",
  });
  const target = `127.0.0.1:${grpcPort}`;
  const clients = connect(target, { token: TOKEN });
  const stop = async () => {
    clients.close();
    await stopProcess(server);
    await stopProcess(redis);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForReady(clients, 30_000);
  } catch (error) {
    await stop();
    throw error;
  }
  return { target, clients, stop };
}
