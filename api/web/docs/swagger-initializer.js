// orderly's explorer settings. The document is this server's own
// /openapi.yaml (relative, so a reverse proxy's prefix keeps working);
// validatorUrl is off so the page never calls validator.swagger.io.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "../openapi.yaml",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false,
  });
};
