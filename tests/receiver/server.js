// The tests' HTTP destination (tests/destinations.rs): a team's existing
// webhook handler, verifying each delivery with the official `stripe`
// package's `stripe.webhooks.constructEvent(body, header, secret)` over the
// raw body, exactly as Stripe's documentation shows.
//
// POST /hook/NAME          a delivery for destination NAME (secret from
//                          RECEIVER_SECRETS, a JSON map of NAME to whsec_…,
//                          or to a list of them: each is tried, and the
//                          delivery records which one verified it)
// PUT  /script/NAME        JSON list of answers to give next, in order:
//                          {"status":500}, {"status":429,"retryAfter":2},
//                          {"status":301,"location":"https://…"},
//                          {"delayMs":5000} (answer late), {"reset":true}
//                          (drop the connection); then 200 again
// PUT  /down/NAME          {"until": <unix ms>}: answer 503 until then
// GET  /deliveries/NAME    every delivery seen: eventId, attempt,
//                          idempotencyKey, hooklineEventId, redelivery,
//                          userAgent, verified, verifiedWith, body
// Prints the port it listens on, then serves until killed.
const http = require("http");
const Stripe = require("stripe");

const stripe = new Stripe("sk_test_receiverNotUsed");
const secrets = JSON.parse(process.env.RECEIVER_SECRETS || "{}");
const scripts = {};
const down = {};
const deliveries = {};

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function json(res, status, value) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}

const server = http.createServer(async (req, res) => {
  const [, route, name] = req.url.split("/");
  const body = await readBody(req);
  if (req.method === "PUT" && route === "script") {
    scripts[name] = JSON.parse(body.toString("utf8"));
    return json(res, 200, { ok: true });
  }
  if (req.method === "PUT" && route === "down") {
    down[name] = JSON.parse(body.toString("utf8")).until;
    return json(res, 200, { ok: true });
  }
  if (req.method === "GET" && route === "deliveries") {
    return json(res, 200, deliveries[name] || []);
  }
  if (req.method !== "POST" || route !== "hook") {
    return json(res, 404, { error: "no such route" });
  }
  let verified = false;
  let verifiedWith = null;
  let eventId = null;
  [].concat(secrets[name]).forEach((secret, i) => {
    if (verified) return;
    try {
      const event = stripe.webhooks.constructEvent(
        body,
        req.headers["stripe-signature"],
        secret,
      );
      verified = true;
      verifiedWith = i;
      eventId = event.id;
    } catch (err) {
      // not this secret
    }
  });
  (deliveries[name] = deliveries[name] || []).push({
    eventId,
    verified,
    verifiedWith,
    attempt: Number(req.headers["hookline-delivery-attempt"]),
    idempotencyKey: req.headers["idempotency-key"] || null,
    hooklineEventId: req.headers["hookline-event-id"] || null,
    redelivery: req.headers["hookline-redelivery"] || null,
    userAgent: req.headers["user-agent"] || null,
    body: body.toString("utf8"),
    at: Date.now(),
  });
  if (!verified) return json(res, 400, { error: "signature verification failed" });
  if (down[name] && Date.now() < down[name]) {
    return json(res, 503, { error: "down for maintenance" });
  }
  const next = (scripts[name] || []).shift();
  if (!next) return json(res, 200, { received: true });
  if (next.reset) return req.socket.destroy();
  const answer = () => {
    const headers = { "content-type": "application/json" };
    if (next.retryAfter !== undefined) headers["retry-after"] = String(next.retryAfter);
    if (next.location) headers.location = next.location;
    res.writeHead(next.status || 200, headers);
    res.end(JSON.stringify({ scripted: next.status || 200, message: next.message || "" }));
  };
  if (next.delayMs) setTimeout(answer, next.delayMs);
  else answer();
});

server.keepAliveTimeout = 65000;
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(server.address().port);
});
