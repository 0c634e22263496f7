// server.mjs is the independent OPC UA server that fieldgate's tests run
// against (node-opcua, pinned by package-lock.json). It serves a fixed set of
// known variables plus an optional bulk set, and prints one line
//
//	ENDPOINT opc.tcp://127.0.0.1:PORT CERT /path/to/server/cert.pem
//
// on stdout once it listens, which the Go side (internal/testpeer/opcua.go)
// waits for.
//
// Flags (all optional):
//
//	--port N            TCP port (default 4840)
//	--pki DIR           PKI folder of the server (own certificate, trusted clients); default ./pki
//	--secure            offer only Basic256Sha256 / SignAndEncrypt and refuse anonymous users
//	--user NAME --password PW   accepted user name token (default none)
//	--bulk N            add N Double variables ns=1;s=Bulk.0 .. Bulk.N-1 (changing every second)
//	--max-items-per-call N  OperationLimits MaxMonitoredItemsPerCall (default 500)
//	--max-nodes-per-read N  OperationLimits MaxNodesPerRead (default 500)
//	--oversize N        add Big.String (String of N characters), Big.Bytes
//	                    (ByteString of N bytes) and Big.Array (Double[N]),
//	                    constant, for the collector's size limits
//
// Known variables (namespace 1, string ids):
//
//	Boiler1.Temperature Double   constant 21.5
//	Boiler1.Running     Boolean  constant true
//	Boiler1.Counter     Int32    +1 every 100 ms, from 0
//	Boiler1.Name        String   constant "boiler-1"
//	Boiler1.Total       UInt64   constant 9000000000
//	Boiler1.Offset      Int64    constant -42
//	Boiler1.Pressure    Float    constant 1.25
//	Pump1.Speed         UInt16   constant 1450
//	Pump1.Level         Double   sine wave, changes every 100 ms
//	Boiler1.Setpoint    Double   50, writable
//	Boiler1.Mode        Int16    1, writable
//	Boiler1.Locked      Double   7, read-only (a write gets BadNotWritable)
import {
  OPCUAServer,
  OPCUACertificateManager,
  Variant,
  DataType,
  VariantArrayType,
  MessageSecurityMode,
  SecurityPolicy,
} from "node-opcua";
import path from "node:path";
import process from "node:process";

function parseArgs(argv) {
  const o = {
    port: 4840,
    pki: "./pki",
    secure: false,
    user: "",
    password: "",
    bulk: 0,
    maxItemsPerCall: 500,
    maxNodesPerRead: 500,
    oversize: 0,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`flag ${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "--port": o.port = parseInt(next(), 10); break;
      case "--pki": o.pki = next(); break;
      case "--secure": o.secure = true; break;
      case "--user": o.user = next(); break;
      case "--password": o.password = next(); break;
      case "--bulk": o.bulk = parseInt(next(), 10); break;
      case "--max-items-per-call": o.maxItemsPerCall = parseInt(next(), 10); break;
      case "--max-nodes-per-read": o.maxNodesPerRead = parseInt(next(), 10); break;
      case "--oversize": o.oversize = parseInt(next(), 10); break;
      default: throw new Error(`unknown flag ${a}`);
    }
  }
  return o;
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  const pki = path.resolve(opt.pki);

  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "server"),
    // Tests use freshly generated client certificates; the server side of
    // trust is not what they check.
    automaticallyAcceptUnknownCertificate: true,
  });
  await serverCertificateManager.initialize();
  // X.509 user tokens: any user certificate is accepted (tests check the
  // client's token handling, not the server's user database).
  const userCertificateManager = new OPCUACertificateManager({
    rootFolder: path.join(pki, "user"),
    automaticallyAcceptUnknownCertificate: true,
  });
  await userCertificateManager.initialize();

  const securityPolicies = opt.secure
    ? [SecurityPolicy.Basic256Sha256]
    : [SecurityPolicy.None, SecurityPolicy.Basic256Sha256, SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss];
  const securityModes = opt.secure
    ? [MessageSecurityMode.SignAndEncrypt]
    : [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt];

  const server = new OPCUAServer({
    port: opt.port,
    hostname: "127.0.0.1",
    resourcePath: "",
    serverCertificateManager,
    userCertificateManager,
    securityPolicies,
    securityModes,
    allowAnonymous: !opt.secure,
    maxConnectionsPerEndpoint: 50,
    userManager: {
      isValidUser: (user, password) => opt.user !== "" && user === opt.user && password === opt.password,
    },
    serverCapabilities: {
      maxSessions: 50,
      maxSubscriptions: 100,
      maxMonitoredItems: 1000000,
      maxMonitoredItemsPerSubscription: 1000000,
      operationLimits: {
        maxMonitoredItemsPerCall: opt.maxItemsPerCall,
        maxNodesPerRead: opt.maxNodesPerRead,
      },
    },
    buildInfo: { productName: "fieldgate-opcua-testserver" },
  });

  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const objects = addressSpace.rootFolder.objects;

  const boiler = ns.addObject({ organizedBy: objects, browseName: "Boiler1", nodeId: "s=Boiler1" });
  const pump = ns.addObject({ organizedBy: objects, browseName: "Pump1", nodeId: "s=Pump1" });

  const constant = (parent, name, dataType, value) =>
    ns.addVariable({
      componentOf: parent,
      browseName: name,
      nodeId: `s=${parent.browseName.name}.${name}`,
      dataType,
      // 64-bit integers are [high, low] pairs, which node-opcua cannot tell
      // from an array without being told.
      value: new Variant({ dataType: DataType[dataType], arrayType: VariantArrayType.Scalar, value }),
    });

  constant(boiler, "Temperature", "Double", 21.5);
  constant(boiler, "Running", "Boolean", true);
  constant(boiler, "Name", "String", "boiler-1");
  constant(boiler, "Total", "UInt64", [2, 410065408]); // 9000000000 = 2*2^32 + 410065408
  constant(boiler, "Offset", "Int64", [0xffffffff, 0xffffffd6]); // -42
  constant(boiler, "Pressure", "Float", 1.25);
  constant(pump, "Speed", "UInt16", 1450);

  for (const [name, dataType, value, access] of [
    ["Setpoint", "Double", 50, "CurrentRead | CurrentWrite"],
    ["Mode", "Int16", 1, "CurrentRead | CurrentWrite"],
    ["Locked", "Double", 7, "CurrentRead"],
  ]) {
    ns.addVariable({
      componentOf: boiler,
      browseName: name,
      nodeId: `s=Boiler1.${name}`,
      dataType,
      accessLevel: access,
      userAccessLevel: access,
      value: new Variant({ dataType: DataType[dataType], value }),
    });
  }

  let counter = 0;
  const counterVar = ns.addVariable({
    componentOf: boiler,
    browseName: "Counter",
    nodeId: "s=Boiler1.Counter",
    dataType: "Int32",
    value: new Variant({ dataType: DataType.Int32, value: 0 }),
  });
  const levelVar = ns.addVariable({
    componentOf: pump,
    browseName: "Level",
    nodeId: "s=Pump1.Level",
    dataType: "Double",
    value: new Variant({ dataType: DataType.Double, value: 50 }),
  });
  const fast = setInterval(() => {
    counter++;
    counterVar.setValueFromSource(new Variant({ dataType: DataType.Int32, value: counter }));
    levelVar.setValueFromSource(new Variant({ dataType: DataType.Double, value: 50 + 10 * Math.sin(counter / 10) }));
  }, 100);

  const bulk = [];
  if (opt.bulk > 0) {
    const folder = ns.addFolder(objects, { browseName: "Bulk", nodeId: "s=Bulk" });
    for (let i = 0; i < opt.bulk; i++) {
      bulk.push(
        ns.addVariable({
          componentOf: folder,
          browseName: `Bulk.${i}`,
          nodeId: `s=Bulk.${i}`,
          dataType: "Double",
          value: new Variant({ dataType: DataType.Double, value: i }),
        }),
      );
    }
  }
  if (opt.oversize > 0) {
    const big = ns.addObject({ organizedBy: objects, browseName: "Big", nodeId: "s=Big" });
    const n = opt.oversize;
    ns.addVariable({ componentOf: big, browseName: "String", nodeId: "s=Big.String", dataType: "String",
      value: new Variant({ dataType: DataType.String, value: "x".repeat(n) }) });
    ns.addVariable({ componentOf: big, browseName: "Bytes", nodeId: "s=Big.Bytes", dataType: "ByteString",
      value: new Variant({ dataType: DataType.ByteString, value: Buffer.alloc(n, 7) }) });
    ns.addVariable({ componentOf: big, browseName: "Array", nodeId: "s=Big.Array", dataType: "Double", valueRank: 1,
      value: new Variant({ dataType: DataType.Double, arrayType: VariantArrayType.Array, value: new Float64Array(n).fill(1.5) }) });
  }

  let tick = 0;
  const slow = setInterval(() => {
    tick++;
    for (let i = 0; i < bulk.length; i++) {
      bulk[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: i + tick }));
    }
  }, 1000);

  await server.start();

  const certFile = server.certificateFile || path.join(pki, "server", "own", "certs", "certificate.pem");
  process.stdout.write(`ENDPOINT opc.tcp://127.0.0.1:${opt.port} CERT ${certFile}\n`);

  const stop = async () => {
    clearInterval(fast);
    clearInterval(slow);
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  process.stderr.write(`opcua test server: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
