"""Azure Functions entry point: registers the rotation blueprint and nothing else."""

import azure.functions as func

from rotation.triggers import bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(bp)
