"""Recording stand-ins for `azd` and `az`, enough of them to run this template's hooks through azd's lifecycle.

What they model, and where that comes from (Azure/azure-dev, cli/azd):
- `azd up` runs provision then deploy; `azd provision` runs the preprovision hook, the deployment, then the
  postprovision hook; `azd deploy` the postdeploy hook after the code deploy (pkg/ext hooks, azure.yaml `hooks`).
- Before and after every hook azd reloads .azure/<env>/.env (pkg/ext/hooks_runner.go RunHooks: envManager.Reload), so
  a hook's `azd env set` is what the next step reads; hooks get the environment's values as variables.
- A provision writes the template's outputs into .env (pkg/infra/provisioning/manager.go UpdateEnvironment);
  `azd down` deletes the resource group and removes exactly those outputs (Manager.Destroy: InvalidatedEnvKeys,
  DotenvDelete), so every other value, DEPLOY_EVENT_SUBSCRIPTION included, survives it. AZURE_LOCATION is an
  output too: the next provision prompts for it (the stand-in answers STUB_PROMPT_LOCATION).
- The deployment: names from uniqueString(subscription, environment, location) as main.bicep builds them; with
  deployEventSubscription=true Event Grid validates the AzureFunction endpoint when the subscription is PUT, so a
  provision fails when on_gateway_token_event does not exist in the app that deployment targets (docs/deploy.md).
The cloud's state is a JSON file the test reads afterwards.
"""

from __future__ import annotations

AZD = r'''#!{python}
import hashlib, json, os, subprocess, sys

STATE = os.environ["STUB_STATE"]
HOOKS = os.environ["STUB_HOOKS"]
OUTPUTS = ("AZURE_LOCATION", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_ID", "AZURE_FUNCTION_APP_NAME",
           "EVENT_SUBSCRIPTION_DEPLOYED", "AKS_NAMESPACE_SCOPES", "AKS_ROTATOR_ROLE_ID", "ROTATOR_IDENTITY_PRINCIPAL_ID")

def load(name, default):
    path = os.path.join(STATE, name)
    return json.load(open(path, encoding="utf-8")) if os.path.exists(path) else default

def save(name, value):
    json.dump(value, open(os.path.join(STATE, name), "w", encoding="utf-8"), indent=1)

def log(entry):
    with open(os.path.join(STATE, "azd.log"), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")

def hook(name):
    path = os.path.join(HOOKS, name + ".sh")
    if not os.path.exists(path):
        return
    env = {{**os.environ, **load("env.json", {{}})}}
    log({{"hook": name}})
    code = subprocess.run(["sh", path], env=env, stdin=subprocess.DEVNULL).returncode
    if code:
        print(f"ERROR: error executing step command 'hook {{name}}': exit code: {{code}}", file=sys.stderr)
        sys.exit(code)

def provision():
    env = load("env.json", {{}})
    if "AZURE_LOCATION" not in env:  # azd prompts for it (an output, so `azd down` removed it); the test answers
        env["AZURE_LOCATION"] = os.environ["STUB_PROMPT_LOCATION"]
        save("env.json", env)
    hook("preprovision")
    env, cloud = load("env.json", {{}}), load("cloud.json", {{"apps": {{}}, "eventsubs": {{}}, "provisions": []}})
    sub, loc, name = env["AZURE_SUBSCRIPTION_ID"], env["AZURE_LOCATION"], env["AZURE_ENV_NAME"]
    token = hashlib.sha1(f"{{sub}}|{{name}}|{{loc}}".encode()).hexdigest()[:13]
    group = f"rg-{{name}}"
    app = f"/subscriptions/{{sub}}/resourceGroups/{{group}}/providers/Microsoft.Web/sites/func-rotator-{{token}}"
    cloud["apps"].setdefault(app, {{"functions": [], "location": loc}})
    with_subscription = env.get("DEPLOY_EVENT_SUBSCRIPTION", "false") == "true"  # main.parameters.json default
    exists = "on_gateway_token_event" in cloud["apps"][app]["functions"]
    cloud["provisions"].append({{"deployEventSubscription": with_subscription, "app": app, "functionExisted": exists}})
    if with_subscription and not exists:
        save("cloud.json", cloud)
        print("ERROR: deployment failed: Url validation: destination endpoint "
              f"{{app}}/functions/on_gateway_token_event does not exist (Event Grid)", file=sys.stderr)
        sys.exit(1)
    if with_subscription:
        cloud["eventsubs"][f"apim-token-rotator-{{token}}"] = app + "/functions/on_gateway_token_event"
    save("cloud.json", cloud)
    env.update({{"AZURE_LOCATION": loc, "AZURE_RESOURCE_GROUP": group, "AZURE_FUNCTION_APP_ID": app,
                "AZURE_FUNCTION_APP_NAME": app.rsplit("/", 1)[1],
                "EVENT_SUBSCRIPTION_DEPLOYED": "true" if with_subscription else "false",
                "AKS_NAMESPACE_SCOPES": "", "AKS_ROTATOR_ROLE_ID": "", "ROTATOR_IDENTITY_PRINCIPAL_ID": "p-" + token}})
    save("env.json", env)
    hook("postprovision")

def deploy():
    env, cloud = load("env.json", {{}}), load("cloud.json", {{}})
    app = cloud["apps"][env["AZURE_FUNCTION_APP_ID"]]
    app["functions"] = ["on_gateway_token_event", "sweep", "api"]
    app["unindexedChecks"] = int(os.environ.get("STUB_INDEX_DELAY", "0"))  # the host indexes after it starts
    save("cloud.json", cloud)
    log({{"deployed": env["AZURE_FUNCTION_APP_ID"]}})
    hook("postdeploy")

args = sys.argv[1:]
log({{"azd": args}})
if args[:2] == ["env", "set"]:
    env = load("env.json", {{}})
    env[args[2]] = args[3]
    save("env.json", env)
elif args[:2] == ["env", "get-value"]:
    env = load("env.json", {{}})
    if args[2] not in env:
        print(f"ERROR: key '{{args[2]}}' not found in the environment values")
        sys.exit(1)
    print(env[args[2]])
elif args[0] == "provision":
    provision()
elif args[0] == "deploy":
    deploy()
elif args[0] == "up":
    provision()
    deploy()
elif args[0] == "down":
    env, cloud = load("env.json", {{}}), load("cloud.json", {{}})
    group = f"/resourceGroups/{{env['AZURE_RESOURCE_GROUP']}}/"
    cloud["apps"] = {{k: v for k, v in cloud["apps"].items() if group not in k}}
    save("cloud.json", cloud)
    save("env.json", {{k: v for k, v in env.items() if k not in OUTPUTS}})
else:
    print("stub azd: unexpected arguments", args, file=sys.stderr)
    sys.exit(2)
'''

AZ = r'''#!{python}
import json, os, sys
args = sys.argv[1:]
state = os.environ["STUB_STATE"]
with open(os.path.join(state, "az.log"), "a", encoding="utf-8") as f:
    f.write(json.dumps(args) + "\n")
def opt(name):
    return args[args.index(name) + 1] if name in args else None
if args[:2] == ["resource", "show"]:
    path = os.path.join(state, "cloud.json")
    cloud = json.load(open(path, encoding="utf-8"))
    app, _, function = opt("--ids").partition("/functions/")
    found = cloud["apps"].get(app, {{}})
    shows = cloud["shows"] = cloud.get("shows", 0) + 1
    signed_out = shows > int(os.environ.get("STUB_AZ_SIGNED_IN_FOR", "1000000"))
    if found.get("unindexedChecks"):
        found["unindexedChecks"] -= 1
    elif function in found.get("functions", []) and not signed_out:
        json.dump(cloud, open(path, "w", encoding="utf-8"))
        print(opt("--ids"))
        sys.exit(0)
    json.dump(cloud, open(path, "w", encoding="utf-8"))
    print(f"(ResourceNotFound) The Resource '{{opt('--ids')}}' was not found.", file=sys.stderr)
    sys.exit(3)
print("stub az: unexpected arguments", args, file=sys.stderr)
sys.exit(2)
'''
