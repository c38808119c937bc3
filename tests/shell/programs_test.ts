/** The shell driven by the real programs people use: Debian's netcat-openbsd and telnet. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { startShell } from "../../src/shell/telnet.ts";
import { FakeControl, sampleJobs } from "./fake.ts";

function which(program: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${program}`).isFile) return `${dir}/${program}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

const nc = which("nc");
const telnet = which("telnet");

/** Runs a shell pipeline, killing it if it hangs. */
async function sh(script: string, timeoutMs = 15_000): Promise<{ code: number; stdout: string }> {
  const child = new Deno.Command("sh", { args: ["-c", script], stdout: "piped", stderr: "piped" })
    .spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    const { code, stdout } = await child.output();
    return { code, stdout: new TextDecoder().decode(stdout) };
  } finally {
    clearTimeout(timer);
  }
}

const TABLE_HEADER =
  "| Job     | SLA     | Status                | Last Backup (UTC)   | Last Tags    | Last Dur | Next Backup (UTC)   | Next Tags | Failures | Last Error                                                   |";

async function withShell(body: (port: number, control: FakeControl) => Promise<void>) {
  const control = new FakeControl(sampleJobs());
  const server = await startShell({
    addrs: ["::1", "127.0.0.1"],
    port: 0,
    control,
    version: "3.0.0-test",
  });
  try {
    // Port 0 gives each address its own port; the IPv4 one serves these tests.
    await body(server.listening[1].port, control);
  } finally {
    await server.close();
  }
}

Deno.test({
  name: `nc (netcat-openbsd) gets the jobs table${nc ? "" : " [ignored: nc not installed]"}`,
  ignore: !nc,
  fn: () =>
    withShell(async (port, control) => {
      const { code, stdout } = await sh(
        `printf 'jobs\\r\\nrun web01\\r\\nquit\\r\\n' | nc -q 2 127.0.0.1 ${port}`,
      );
      assertEquals(code, 0);
      assert(stdout.startsWith("backy 3.0.0-test\r\nReady.\r\nbacky> "), stdout);
      assert(stdout.includes(`${TABLE_HEADER}\r\n`), stdout);
      assert(stdout.includes("\r\n3 jobs shown\r\nbacky> triggered web01\r\n"), stdout);
      assert(stdout.endsWith("backy> Goodbye.\r\n"), stdout);
      assertEquals(control.triggered, ["web01"]);

      // Bare LF line ends, and input ending without quit: -N sends EOF instead.
      const plain = await sh(`printf 'jobs db\\nstatus' | nc -N 127.0.0.1 ${port}`);
      assertEquals(plain.code, 0);
      assert(plain.stdout.includes("\r\n1 jobs shown\r\n"), plain.stdout);
      assert(plain.stdout.includes("1 of 2 workers busy\r\nbacky> "), plain.stdout);
    }),
});

Deno.test({
  name: `telnet client gets the jobs table${telnet ? "" : " [ignored: telnet not installed]"}`,
  ignore: !telnet,
  fn: () =>
    withShell(async (port) => {
      const { stdout: raw } = await sh(
        `(sleep 0.5; printf 'jobs\\r\\n'; sleep 0.5; printf 'quit\\r\\n'; sleep 0.5) | ` +
          `telnet 127.0.0.1 ${port}`,
      );
      // telnet prints CR LF as the local line end; our "\r\n" reaches it as CR NUL CR LF,
      // i.e. one extra empty command and prompt.
      const stdout = raw.replaceAll("\r", "");
      assert(stdout.includes("\nbacky 3.0.0-test\nReady.\nbacky> +---"), stdout);
      assert(stdout.includes(`\n${TABLE_HEADER}\n`), stdout);
      assert(stdout.includes("\n3 jobs shown\nbacky> backy> Goodbye.\n"), stdout);
    }),
});
