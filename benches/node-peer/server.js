// The Node peer of benches/ingress_load.rs: what a hand-rolled webhook
// handler does with Express and stripe-node, verifying with Stripe's own
// constructEvent over the raw body, then keeping the event in memory (no
// durable enqueue, so it does less than Hookline's ingress).
// PORT and STRIPE_WEBHOOK_SECRET come from the environment.
const express = require("express");
const Stripe = require("stripe");

const stripe = new Stripe("sk_test_nodePeerNotUsed");
const secret = process.env.STRIPE_WEBHOOK_SECRET;
const app = express();
const events = [];

app.get("/readyz", (_req, res) => res.send("ready"));
app.post(
  "/api/stripe-webhook",
  express.raw({ type: "*/*", limit: "1mb" }),
  (req, res) => {
    let event;
    try {
      event = stripe.webhooks.constructEvent(
        req.body,
        req.headers["stripe-signature"],
        secret,
      );
    } catch (err) {
      res.status(400).json({ error: "invalid signature" });
      return;
    }
    events.push(event);
    if (events.length > 100000) events.length = 0;
    res.json({ received: true });
  },
);

app.listen(Number(process.env.PORT || 3000), "127.0.0.1");
