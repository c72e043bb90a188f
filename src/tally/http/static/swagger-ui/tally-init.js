// Tally's own: starts Swagger UI on /docs. A file rather than an inline script, so the page's
// Content-Security-Policy can say script-src 'self'. validatorUrl null: no badge fetched from
// validator.swagger.io.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
});
