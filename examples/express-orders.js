// An Express app as a function (third form: full HTTP control). Express routes on req.url
// (the path after the function name) and parses the body itself.
const express = require('express');

const app = express();
app.use(express.json());
app.get('/orders/:id', (req, res) => res.json({ id: req.params.id, expand: req.query.expand || null }));
app.post('/orders', (req, res) => res.status(201).json({ created: true, items: (req.body.items || []).length }));
app.use((req, res) => res.status(404).json({ error: 'no such route', path: req.path }));

module.exports = (ctx, req, res) => app(req, res);
