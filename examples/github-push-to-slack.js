// GitHub push webhook -> a Slack-style message.
//
// Configuration: GITHUB_WEBHOOK_SECRET (the secret set on the GitHub webhook).
// GitHub signs the exact bytes it sends (x-hub-signature-256), so the signature is checked
// over ctx.rawBody, never over a re-serialised body.
const crypto = require('node:crypto');

function verify(ctx) {
  const secret = ctx.configuration.GITHUB_WEBHOOK_SECRET || '';
  const given = String(ctx.headers['x-hub-signature-256'] || '');
  const want = 'sha256=' + crypto.createHmac('sha256', secret).update(ctx.rawBody || Buffer.alloc(0)).digest('hex');
  return secret !== '' && given.length === want.length && crypto.timingSafeEqual(Buffer.from(given), Buffer.from(want));
}

module.exports = async (ctx) => {
  if (!verify(ctx)) return { status: 401, body: { error: 'invalid signature' } };
  const event = ctx.headers['x-github-event'];
  if (event === 'ping') return { body: { ok: true, zen: ctx.body.zen } };
  if (event !== 'push') return { status: 202, body: { ignored: event } };

  const push = ctx.body;
  const branch = String(push.ref || '').replace(/^refs\/heads\//, '');
  const commits = push.commits || [];
  const lines = commits.slice(0, 5).map((c) => `• <${c.url}|${c.id.slice(0, 7)}> ${c.message.split('\n')[0]} — ${c.author.name}`);
  if (commits.length > 5) lines.push(`…and ${commits.length - 5} more`);
  console.log(`push to ${push.repository.full_name}@${branch}: ${commits.length} commit(s)`);
  return {
    body: {
      text: `${push.pusher.name} pushed ${commits.length} commit${commits.length === 1 ? '' : 's'} to ${push.repository.full_name}@${branch}`,
      blocks: [{ type: 'section', text: { type: 'mrkdwn', text: lines.join('\n') || '_no commits_' } }],
    },
  };
};
