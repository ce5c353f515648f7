// Stripe webhook filter (ES module): verifies the Stripe-Signature header and lets through
// only successful payments above a threshold.
//
// Configuration: STRIPE_WEBHOOK_SECRET (whsec_...), MIN_AMOUNT (smallest amount, in cents).
// Stripe signs `${timestamp}.${raw body}`; the check uses ctx.rawBody and a 5-minute tolerance.
import crypto from 'node:crypto';

const TOLERANCE_SECONDS = 300;

function verify(ctx) {
  const header = String(ctx.headers['stripe-signature'] || '');
  const parts = Object.fromEntries(header.split(',').map((kv) => kv.split('=', 2)));
  const t = Number(parts.t);
  if (!Number.isFinite(t) || Math.abs(Date.now() / 1000 - t) > TOLERANCE_SECONDS) return false;
  const signed = Buffer.concat([Buffer.from(`${parts.t}.`), ctx.rawBody || Buffer.alloc(0)]);
  const want = crypto.createHmac('sha256', ctx.configuration.STRIPE_WEBHOOK_SECRET || '').update(signed).digest('hex');
  return header.split(',').some((kv) => {
    const [k, v] = kv.split('=', 2);
    return k === 'v1' && v && v.length === want.length && crypto.timingSafeEqual(Buffer.from(v), Buffer.from(want));
  });
}

export default async function filter(ctx) {
  if (!verify(ctx)) return { status: 400, body: { error: 'invalid Stripe signature' } };
  const event = ctx.body;
  const min = Number(ctx.configuration.MIN_AMOUNT || 0);
  if (event.type !== 'payment_intent.succeeded') return { status: 202, body: { ignored: event.type } };
  const intent = event.data.object;
  if (intent.amount < min) return { status: 202, body: { ignored: 'below threshold', amount: intent.amount } };
  return { body: { forward: true, id: intent.id, amount: intent.amount, currency: intent.currency } };
}
