import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
import { BackyError } from "../../src/util/errors.ts";
import {
  MAX_LINE,
  parseShellAddress,
  type ShellLogger,
  type ShellOptions,
  type ShellServer,
  startShell,
  TelnetDecoder,
} from "../../src/shell/telnet.ts";
import { execute } from "../../src/shell/commands.ts";
import { FakeControl, manyJobs, sampleJobs } from "./fake.ts";
import { bytesOf, Client } from "./client.ts";
import { getLogger } from "@logtape/logtape";

// The daemon hands its logtape logger to the shell.
const _typeCheck: ShellLogger = getLogger(["backy", "shell"]);

const IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240, NOP = 241;
const ECHO = 1, SGA = 3, NAWS = 31;
const BANNER = "backy 3.0.0-test\r\nReady.\r\nbacky> ";
const crlf = (s: string) => s.replace(/\n/g, "\r\n");

async function withShell(
  control: FakeControl,
  body: (port: number, server: ShellServer) => Promise<void>,
  extra: Partial<ShellOptions> = {},
): Promise<void> {
  const server = await startShell({
    addrs: ["127.0.0.1"],
    port: 0,
    control,
    version: "3.0.0-test",
    ...extra,
  });
  try {
    await body(server.listening[0].port, server);
  } finally {
    await server.close();
  }
}

Deno.test("decoder: line endings, NUL, IAC IAC, option refusal, subnegotiation", () => {
  const d = new TelnetDecoder();
  const events = d.feed(Uint8Array.of(
    ...bytesOf("a\r\nb\r\0c\nd"),
    IAC,
    DO,
    ECHO,
    IAC,
    WILL,
    NAWS,
    IAC,
    WONT,
    SGA,
    IAC,
    DONT,
    SGA,
    IAC,
    SB,
    NAWS,
    0,
    80,
    IAC,
    IAC,
    24,
    IAC,
    SE,
    IAC,
    NOP,
    IAC,
    IAC,
    ...bytesOf("\r"),
  ));
  assertEquals(events, [
    { kind: "line", text: "a" },
    { kind: "line", text: "b" },
    { kind: "line", text: "c" },
    { kind: "reply", bytes: Uint8Array.of(IAC, WONT, ECHO) },
    { kind: "reply", bytes: Uint8Array.of(IAC, DONT, NAWS) },
    { kind: "line", text: "d\uFFFD" }, // the literal 0xFF is no valid UTF-8
  ]);
  // The CR before was a line end; this LF belongs to it, and "e" then ends with the input.
  assertEquals(d.feed(bytesOf("\ne")), []);
  assertEquals(d.finish(), [{ kind: "line", text: "e" }]);
});

Deno.test("decoder: a line of MAX_LINE bytes is kept, one more is discarded", () => {
  const d = new TelnetDecoder();
  const max = "x".repeat(MAX_LINE);
  assertEquals(d.feed(bytesOf(`${max}\n`)), [{ kind: "line", text: max }]);
  assertEquals(d.feed(bytesOf(`${max}y`)), []);
  for (let i = 0; i < 100; i++) assertEquals(d.feed(bytesOf("z".repeat(10_000))), []);
  assertEquals(d.feed(bytesOf("\r\nok\r\n")), [{ kind: "tooLong" }, { kind: "line", text: "ok" }]);
});

Deno.test("addresses: IP literals only, loopback unless allowed", async () => {
  assertEquals(parseShellAddress("localhost"), { hostname: "127.0.0.1", loopback: true });
  assertEquals(parseShellAddress("127.0.0.1"), { hostname: "127.0.0.1", loopback: true });
  assertEquals(parseShellAddress("127.8.9.10"), { hostname: "127.8.9.10", loopback: true });
  assertEquals(parseShellAddress("::1"), { hostname: "::1", loopback: true });
  assertEquals(parseShellAddress("[0:0::1]"), { hostname: "::1", loopback: true });
  assertEquals(parseShellAddress("::ffff:127.0.0.1"), {
    hostname: "::ffff:7f00:1",
    loopback: true,
  });
  assertEquals(parseShellAddress("0.0.0.0"), { hostname: "0.0.0.0", loopback: false });
  assertEquals(parseShellAddress("::"), { hostname: "::", loopback: false });
  assertEquals(parseShellAddress("192.0.2.7"), { hostname: "192.0.2.7", loopback: false });
  for (
    const bad of ["example.com", "backup01", "256.1.1.1", "01.2.3.4", "::1::2", "fe80::1%eth0", ""]
  ) {
    assertThrows(() => parseShellAddress(bad), BackyError, bad);
  }

  const control = new FakeControl(sampleJobs());
  const base = { port: 0, control, version: "x" };
  await assertRejects(
    startShell({ ...base, addrs: ["127.0.0.1", "0.0.0.0"] }),
    (e: unknown) => e instanceof BackyError && /non-loopback address 0\.0\.0\.0/.test(e.message),
  );
  await assertRejects(
    startShell({ ...base, addrs: ["example.com"] }),
    (e: unknown) => e instanceof BackyError && /not an IP address: example\.com/.test(e.message),
  );
  const wide = await startShell({ ...base, addrs: ["0.0.0.0"], allowNonLoopback: true });
  await wide.close();
});

Deno.test("addresses: default pair, localhost, duplicates bound once", async () => {
  const control = new FakeControl(sampleJobs());
  const server = await startShell({
    addrs: ["::1", "127.0.0.1", "localhost"],
    port: 0,
    control,
    version: "3.0.0-test",
  });
  try {
    assertEquals(server.listening.map((l) => l.hostname), ["::1", "127.0.0.1"]);
    for (const { hostname, port } of server.listening) {
      const client = await Client.connect(port, hostname);
      try {
        assertEquals(await client.readUntil("backy> "), BANNER);
        await client.send("quit\r\n");
        assertEquals(await client.readToEnd(), "Goodbye.\r\n");
      } finally {
        client.close();
      }
    }
  } finally {
    await server.close();
  }
});

Deno.test("bind failure names address and port", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    await assertRejects(
      startShell({ addrs: ["127.0.0.1"], port, control, version: "x" }),
      (e: unknown) => e instanceof BackyError && e.message.includes(`127.0.0.1:${port}`),
    );
  });
});

Deno.test("session: banner, jobs table with CRLF, quit closes", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const client = await Client.connect(port);
    try {
      assertEquals(await client.readUntil("backy> "), BANNER);
      await client.send("jobs\r\n");
      const expected = (await execute("jobs", control)).output;
      assertEquals(await client.readUntil("backy> "), crlf(expected) + "backy> ");
      await client.send("\r\n");
      assertEquals(await client.readUntil("backy> "), "backy> ");
      await client.send("nope\r\n");
      assertEquals(
        await client.readUntil("backy> "),
        "no such command: nope (try help)\r\nbacky> ",
      );
      await client.send("quit\r\n");
      assertEquals(await client.readToEnd(), "Goodbye.\r\n");
    } finally {
      client.close();
    }
  });
});

Deno.test("session: telnet negotiation is refused and does not disturb commands", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const client = await Client.connect(port);
    try {
      await client.readUntil("backy> ");
      await client.send(Uint8Array.of(
        IAC,
        DO,
        ECHO,
        IAC,
        WILL,
        NAWS,
        IAC,
        SB,
        NAWS,
        0,
        80,
        0,
        24,
        IAC,
        SE,
        ...bytesOf("ru"),
        IAC,
        NOP,
        ...bytesOf("n web01"),
        IAC,
        WONT,
        SGA,
        ...bytesOf("\r\n"),
      ));
      assertEquals(
        await client.readUntil("backy> "),
        String.fromCharCode(IAC, WONT, ECHO, IAC, DONT, NAWS) + "triggered web01\r\nbacky> ",
      );
      // Subnegotiation split over packets, with an escaped IAC inside.
      await client.send(Uint8Array.of(IAC, SB, NAWS, 0, IAC));
      await client.send(Uint8Array.of(IAC, 80, 0, 24, IAC));
      await client.send(Uint8Array.of(SE, ...bytesOf("run app\r\n")));
      assertEquals(await client.readUntil("backy> "), "triggered app\r\nbacky> ");
      assertEquals(control.triggered, ["web01", "app"]);
    } finally {
      client.close();
    }
  });
});

Deno.test("session: CR LF, CR NUL and bare LF; pipelined commands run in order", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const client = await Client.connect(port);
    try {
      await client.readUntil("backy> ");
      await client.send("run web01\r\0run app\nrun db-main\r");
      await client.send("\nstatus\r\nrun nope\r\nquit\r\nrun web01\r\n");
      const all = await client.readToEnd();
      assertEquals(
        all,
        crlf(
          "triggered web01\nbacky> triggered app\nbacky> triggered db-main\nbacky> " +
            (await execute("status", control)).output +
            "backy> no such job: nope\nbacky> Goodbye.\n",
        ),
      );
      assertEquals(control.triggered, ["web01", "app", "db-main"]); // nothing after quit
    } finally {
      client.close();
    }
  });
});

Deno.test("session: overlong line is discarded with a message, session goes on", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const client = await Client.connect(port);
    try {
      await client.readUntil("backy> ");
      for (let i = 0; i < 64; i++) await client.send("x".repeat(16_384)); // 1 MiB, no newline
      await client.send("\r\nrun app\r\n");
      assertEquals(
        await client.readUntil("triggered app\r\nbacky> "),
        "line too long\r\nbacky> triggered app\r\nbacky> ",
      );
      await client.send(`${"y".repeat(MAX_LINE)}\r\n`);
      assertEquals(
        await client.readUntil("backy> "),
        `no such command: ${"y".repeat(MAX_LINE)} (try help)\r\nbacky> `,
      );
    } finally {
      client.close();
    }
  });
});

Deno.test("session: clients vanishing mid-output do not harm the server", async () => {
  const control = new FakeControl(manyJobs(2000));
  const logged: string[] = [];
  const record = (message: string, properties?: Record<string, unknown>) =>
    logged.push(`${message} ${JSON.stringify(properties ?? {})}`);
  const log: ShellLogger = { debug: record, info: record, warn: record };
  await withShell(control, async (port) => {
    for (let i = 0; i < 5; i++) {
      const client = await Client.connect(port);
      await client.readUntil("backy> ");
      await client.send("jobs\r\njobs\r\njobs\r\n");
      if (i % 2 === 0) await client.readSome(1000);
      client.close(); // with unread data: the kernel sends RST
    }
    // Half-sent command, then gone.
    const half = await Client.connect(port);
    await half.send("jo");
    half.close();

    const client = await Client.connect(port);
    try {
      await client.readUntil("backy> ");
      await client.send("jobs\r\n");
      const out = await client.readUntil("backy> ");
      assert(out.endsWith("\r\n2000 jobs shown\r\nbacky> "), out.slice(-100));
      assertEquals(out.split("\r\n").length, 2000 + 6);
      await client.send("quit\r\n");
      assertEquals(await client.readToEnd(), "Goodbye.\r\n");
    } finally {
      client.close();
    }
  }, { log });
  // The output really was cut off: writes failed, and only those sessions ended.
  assert(
    logged.filter((l) => l.startsWith("telnet shell: connection failed")).length >= 3,
    logged.join("\n"),
  );
  assertEquals(logged.filter((l) => l.startsWith("telnet shell: client connected")).length, 7);
});

Deno.test("session: connection limit", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const a = await Client.connect(port);
    const b = await Client.connect(port);
    const c = await Client.connect(port);
    try {
      assertEquals(await a.readUntil("backy> "), BANNER);
      assertEquals(await b.readUntil("backy> "), BANNER);
      assertEquals(await c.readToEnd(), "too many connections\r\n");
      await a.send("quit\r\n");
      await a.readToEnd();
      a.close();
      // The slot is free once the server has noticed; retry briefly.
      let greeting = "";
      for (let i = 0; i < 50 && greeting !== BANNER; i++) {
        const d = await Client.connect(port);
        try {
          greeting = await d.readSome(BANNER.length);
        } finally {
          d.close();
        }
        if (greeting !== BANNER) await new Promise((r) => setTimeout(r, 20));
      }
      assertEquals(greeting, BANNER);
    } finally {
      a.close();
      b.close();
      c.close();
    }
  }, { maxConnections: 2 });
});

Deno.test("close() ends open sessions and stops listening", async () => {
  const control = new FakeControl(sampleJobs());
  const server = await startShell({
    addrs: ["127.0.0.1"],
    port: 0,
    control,
    version: "3.0.0-test",
  });
  const port = server.listening[0].port;
  const client = await Client.connect(port);
  try {
    await client.readUntil("backy> ");
    await client.send("jo");
    await server.close();
    assertEquals(await client.readToEnd(), "");
    await assertRejects(
      Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
  } finally {
    client.close();
  }
});

Deno.test("idle and stalled clients are disconnected", async () => {
  const control = new FakeControl(sampleJobs());
  await withShell(control, async (port) => {
    const idle = await Client.connect(port);
    try {
      assertEquals(await idle.readToEnd(), BANNER); // closed after 300 ms without input
    } finally {
      idle.close();
    }
    // Asks for ~7 MB and never reads: the server gives up after the write timeout.
    const stalled = await Client.connect(port);
    try {
      await stalled.send("help\r\n".repeat(20_000) + "quit\r\n");
      await new Promise((r) => setTimeout(r, 1000));
      const got = await stalled.readToEnd();
      assert(!got.includes("Goodbye."), "a stalled session must not get everything");
    } finally {
      stalled.close();
    }
    const client = await Client.connect(port);
    try {
      assertEquals(await client.readUntil("backy> "), BANNER);
    } finally {
      client.close();
    }
  }, { idleTimeoutMs: 300, writeTimeoutMs: 300 });
});
