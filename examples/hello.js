// The sample function `make up` deploys: greets the caller and shows the server time
// formatted by an npm module (dayjs), built once by the builder and linked read-only.
const dayjs = require('dayjs');

module.exports = async (ctx) => ({
  status: 200,
  body: {
    hello: ctx.query.name || 'world',
    tenant: ctx.tenant,
    function: ctx.function,
    at: dayjs().format('YYYY-MM-DD HH:mm:ss'),
  },
});
