import { describe, expect, it } from "vitest";
import { DEMO_PORTS, demoPorts, portOfError, portsTaken, type DemoPorts } from "./ports.js";

describe("the demo's ports", () => {
  it("are the defaults, each moved by its variable", () => {
    const found = demoPorts({ PORTICO_DEMO_HELLO_PORT: "18081", PORTICO_ADMIN_PORT: "9000" });
    expect(found).toMatchObject({ ports: { hello: 18081, admin: 9000, edge: DEMO_PORTS.edge.port } });
    // Set to its default, a port has not moved.
    expect("moved" in found && [...found.moved]).toEqual(["hello"]);
  });

  it("refuse what is not a port, and one port given twice, saying which variable to change", () => {
    expect(demoPorts({ PORTICO_DEMO_ECHO_PORT: "80a" })).toEqual({
      code: "bad_port",
      message: "PORTICO_DEMO_ECHO_PORT=80a is not a port number (1-65535)",
    });
    expect(demoPorts({ PORTICO_DEMO_ECHO_PORT: "9000" })).toMatchObject({
      code: "port_twice",
      message: expect.stringMatching(/PORTICO_ADMIN_PORT or PORTICO_DEMO_ECHO_PORT/),
    });
  });

  it("name a taken port by what listens there and the variable that moves it", () => {
    expect(portsTaken([{ name: "authz", port: 9191 }]).message).toBe(
      "port already in use: 9191 (ext-authz: PORTICO_DEMO_AUTHZ_PORT). Stop what holds it (another demo " +
        "still running?) or move it, e.g. PORTICO_DEMO_AUTHZ_PORT=9291 npm run demo",
    );
    const { ports } = demoPorts({}) as { ports: DemoPorts };
    const err = Object.assign(new Error("listen EADDRINUSE: address already in use 127.0.0.1:8082"), {
      code: "EADDRINUSE",
    });
    expect(portOfError(err, ports)).toBe("echo");
  });
});
