// host.mjs is the Sparkplug B host application of fieldgate's tests: code
// independent of fieldgate's (Eclipse Tahu's sparkplug-payload decodes
// every message, mqtt.js carries them). The Go side
// (internal/testpeer/sparkplug.go) starts it, reads what it saw on stdout
// and tells it what to do on stdin.
//
//   node host.mjs --broker mqtt://127.0.0.1:PORT [--host-id ID] [--offline]
//                 [--user U --password P]
//
// With --host-id it is a primary host application: a retained
// spBv1.0/STATE/ID will ({"online":false,"timestamp":<connect time>}), and a
// retained birth ({"online":true,...}) right after subscribing, unless
// --offline.
//
// stdout, one JSON object a line:
//   {"event":"ready"}                                     subscribed
//   {"topic":T,"kind":"NBIRTH","group":G,"edge":E,"device":D,"payload":{...}}
//                                                        every spBv1.0 message, decoded by sparkplug-payload
//   {"topic":T,"kind":"STATE","state":{...}}             STATE messages (JSON)
//   {"event":"error","error":"..."}                     a message that did not decode
//
// stdin, one JSON object a line:
//   {"cmd":"online"} / {"cmd":"offline"}                  publish STATE (retained, QoS 1, a new timestamp)
//   {"cmd":"rebirth","group":G,"edge":E}                  NCMD Node Control/Rebirth = true
//   {"cmd":"dcmd","group":G,"edge":E,"device":D,"metrics":[{"name":N,"alias":A,"type":"Double","value":V}]}
//   {"cmd":"publish","topic":T,"payload":"text","retain":false}
//   {"cmd":"close"}                                       clean disconnect (after an offline STATE when primary)
import mqtt from "mqtt";
import sparkplug from "sparkplug-payload";
import process from "node:process";
import readline from "node:readline";

const payloads = sparkplug.get("spBv1.0");

function parseArgs(argv) {
  const o = { broker: "", hostId: "", offline: false, user: "", password: "" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`flag ${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--broker": o.broker = next(); break;
      case "--host-id": o.hostId = next(); break;
      case "--offline": o.offline = true; break;
      case "--user": o.user = next(); break;
      case "--password": o.password = next(); break;
      default: throw new Error(`unknown flag ${a}`);
    }
  }
  if (!o.broker) throw new Error("--broker is required");
  return o;
}

// plain turns decoded values into JSON: protobufjs Longs into numbers (or
// decimal strings beyond 2^53), byte arrays into base64.
function plain(v) {
  if (v === null || v === undefined) return v;
  if (typeof v === "object" && typeof v.low === "number" && typeof v.high === "number" && "unsigned" in v) {
    const s = v.toString();
    const n = Number(s);
    return Number.isSafeInteger(n) ? n : s;
  }
  if (v instanceof Uint8Array) return Buffer.from(v).toString("base64");
  if (Array.isArray(v)) return v.map(plain);
  if (typeof v === "object") {
    const out = {};
    for (const [k, x] of Object.entries(v)) out[k] = plain(x);
    return out;
  }
  return v;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const opt = parseArgs(process.argv.slice(2));
const stateTopic = `spBv1.0/STATE/${opt.hostId}`;
const connectTime = Date.now();
const options = {
  clean: true,
  clientId: `fg-test-host-${process.pid}`,
  reconnectPeriod: 0,
  protocolVersion: 4,
};
if (opt.user) {
  options.username = opt.user;
  options.password = opt.password;
}
if (opt.hostId) {
  options.will = { topic: stateTopic, payload: JSON.stringify({ online: false, timestamp: connectTime }), qos: 1, retain: true };
}
const client = mqtt.connect(opt.broker, options);

function state(online) {
  return new Promise((resolve) => {
    client.publish(stateTopic, JSON.stringify({ online, timestamp: Date.now() }), { qos: 1, retain: true }, () => resolve());
  });
}

client.on("error", (err) => emit({ event: "error", error: String(err) }));
client.on("message", (topic, message) => {
  const parts = topic.split("/");
  if (parts[1] === "STATE") {
    let st = null;
    try { st = JSON.parse(message.toString()); } catch (e) { st = message.toString(); }
    emit({ topic, kind: "STATE", state: st });
    return;
  }
  try {
    const decoded = payloads.decodePayload(message);
    emit({ topic, kind: parts[2], group: parts[1], edge: parts[3], device: parts[4] || "", payload: plain(decoded) });
  } catch (err) {
    emit({ event: "error", topic, error: String(err) });
  }
});

client.on("connect", () => {
  client.subscribe([opt.hostId ? stateTopic : "spBv1.0/STATE/#", "spBv1.0/+/+/#"].filter(Boolean), { qos: 1 }, async (err) => {
    if (err) {
      emit({ event: "error", error: String(err) });
      process.exit(1);
    }
    if (opt.hostId && !opt.offline) {
      // The birth timestamp is the will's (spec 3.0: the connect time).
      await new Promise((resolve) => client.publish(stateTopic, JSON.stringify({ online: true, timestamp: connectTime }), { qos: 1, retain: true }, resolve));
    }
    emit({ event: "ready" });
  });
});

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  let c;
  try { c = JSON.parse(line); } catch (e) { emit({ event: "error", error: `bad command ${line}` }); return; }
  switch (c.cmd) {
    case "online":
      await state(true);
      break;
    case "offline":
      await state(false);
      break;
    case "rebirth": {
      const p = payloads.encodePayload({ timestamp: Date.now(), metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: true }] });
      client.publish(`spBv1.0/${c.group}/NCMD/${c.edge}`, Buffer.from(p), { qos: 0 });
      break;
    }
    case "dcmd": {
      const p = payloads.encodePayload({ timestamp: Date.now(), metrics: c.metrics });
      client.publish(`spBv1.0/${c.group}/DCMD/${c.edge}/${c.device}`, Buffer.from(p), { qos: 0 });
      break;
    }
    case "publish":
      client.publish(c.topic, c.payload, { qos: 1, retain: !!c.retain });
      break;
    case "close":
      client.end(false, () => {
        emit({ event: "closed" });
        process.exit(0);
      });
      return;
    default:
      emit({ event: "error", error: `unknown command ${c.cmd}` });
      return;
  }
  emit({ event: "done", cmd: c.cmd });
});

const stop = () => client.end(true, () => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
