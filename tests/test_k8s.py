"""test_k8s - the Kubernetes manifests in deploy/k8s, checked offline.

`kubectl apply --dry-run=client` cannot do this without a cluster: even in
client mode kubectl asks the API server for its resource list (and, to
validate, for its OpenAPI document), and fails with "connection refused"
when there is none (seen with Debian's kubectl 1.20 and with 1.32).  So the
manifests are checked here against the Kubernetes API schema as Debian's
python3-kubernetes carries it (its models are generated from the API's
OpenAPI document): every field known, every value of the right type, every
required field present.  Then what this project needs of them: selectors
that match, probes on ports that exist, one store with a volume, one router
and one auth, gateways ready on /readyz behind a Service, endpoints that
name those Services, and each container's arguments accepted by the real
binary (--print-config).  If kubectl is installed, `kubectl kustomize` must
build the same set.

Each rule is also shown to fail: a broken copy of the manifests is checked
for each one (Broken*).
"""

import copy
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

try:
    import yaml
    import kubernetes.client as k8s
except ImportError:
    # Debian's packages are for Debian's python; a python from elsewhere
    # (pyenv) runs this file again with it.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and not os.environ.get("QMS_K8S_REEXEC"):
        os.environ["QMS_K8S_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    raise SystemExit("test_k8s: needs Debian's python3-kubernetes and python3-yaml: "
                     "apt-get install -y --no-install-recommends python3-kubernetes (scripts/test installs it)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmslib import BINARY, SOURCE_DIR, free_port  # noqa: E402

K8S_DIR = os.path.join(SOURCE_DIR, "deploy", "k8s")
ROLES = {"store": 5555, "auth": 5556, "router": 5557, "monitor": 5558}

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


# ---------------------------------------------------------------------------
# Schema: the API's types, as the generated client models describe them

def schema_errors(value, type_name, path):
    """Errors of `value` against an OpenAPI type name of the Python client
    ('V1Deployment', 'list[V1Container]', 'dict(str, str)', 'int', ...)."""
    errors = []
    m = re.match(r"^list\[(.+)\]$", type_name)
    if m:
        if not isinstance(value, list):
            return ["%s: a list is expected, not %r" % (path, value)]
        for i, item in enumerate(value):
            errors += schema_errors(item, m.group(1), "%s[%d]" % (path, i))
        return errors
    m = re.match(r"^dict\(str, (.+)\)$", type_name)
    if m:
        if not isinstance(value, dict):
            return ["%s: a mapping is expected, not %r" % (path, value)]
        for k, v in value.items():
            errors += schema_errors(v, m.group(1), "%s.%s" % (path, k))
        return errors
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (type_name != "bool" and isinstance(value, bool))
        return [] if ok else ["%s: %s is expected, not %r" % (path, type_name, value)]
    if type_name in ("object", "datetime", "date"):
        return []           # IntOrString, quantities, free-form: any scalar
    cls = getattr(k8s, type_name, None)
    if cls is None:
        return ["%s: unknown API type %s" % (path, type_name)]
    if not isinstance(value, dict):
        return ["%s: a %s mapping is expected, not %r" % (path, type_name, value)]
    by_json = {json: attr for attr, json in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        attr = by_json.get(key)
        if attr is None:
            errors.append("%s.%s: no such field in %s" % (path, key, type_name))
            continue
        errors += schema_errors(v, cls.openapi_types[attr], "%s.%s" % (path, key))
        kwargs[attr] = v
    try:
        cls(**kwargs)      # the models refuse a missing required field
    except ValueError as e:
        errors.append("%s: %s" % (path, e))
    return errors


def doc_errors(doc, where):
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return ["%s: not a Kubernetes object" % where]
    version = doc["apiVersion"].split("/")[-1]
    type_name = version[0].upper() + version[1:] + doc["kind"]
    return schema_errors(doc, type_name, "%s %s/%s" % (where, doc["kind"], doc.get("metadata", {}).get("name")))


# ---------------------------------------------------------------------------
# What this project needs of the manifests

def load(directory):
    """(kustomization, [(file, object)]) of the resources kustomization.yaml lists."""
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        kust = yaml.safe_load(f)
    docs = []
    for name in kust["resources"]:
        with open(os.path.join(directory, name)) as f:
            docs += [(name, d) for d in yaml.safe_load_all(f) if d is not None]
    return kust, docs


def pod_specs(docs):
    return {d["metadata"]["name"]: (d, d["spec"]["template"]) for _, d in docs
            if d["kind"] in ("Deployment", "StatefulSet")}


# What `qmessageserver keys DIR` writes, as file -> the Secret key it comes
# from (the Secret is made from DIR's files; clients/ holds the public
# client key again).
CURVE_LAYOUT = {"server.cert": "server.cert", "server.cert_secret": "server.cert_secret",
                "client.cert": "client.cert", "client.cert_secret": "client.cert_secret",
                "clients/client.cert": "client.cert"}


def curve_layout(tmpl, keys_dir):
    """The files a pod's container sees under keys_dir, each with the key of
    the Secret qms-curve-keys it comes from ({} when none is mounted)."""
    c = tmpl["spec"]["containers"][0]
    names = [m["name"] for m in c.get("volumeMounts", []) if m.get("mountPath") == keys_dir]
    for v in tmpl["spec"].get("volumes", []):
        secret = v.get("secret") or {}
        if v["name"] in names and secret.get("secretName") == "qms-curve-keys":
            return {i["path"]: i["key"] for i in secret.get("items", [])}
    return {}


def project_errors(docs):
    errors = []
    objs = [d for _, d in docs]
    by = {(d["kind"], d["metadata"]["name"]): d for d in objs}
    workloads = pod_specs(docs)
    endpoints = by.get(("ConfigMap", "qms-endpoints"), {}).get("data", {})

    for name, (w, tmpl) in workloads.items():
        labels = tmpl["metadata"].get("labels", {})
        sel = w["spec"]["selector"].get("matchLabels", {})
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            errors.append("%s: selector %r does not match the pod labels %r" % (name, sel, labels))
        for c in tmpl["spec"]["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errors.append("%s: %s on port %r, which the container does not name" % (name, probe, port))
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False or "ALL" not in sc.get("capabilities", {}).get("drop", []):
                errors.append("%s: the container may gain privileges" % name)
        if tmpl["spec"].get("securityContext", {}).get("runAsNonRoot") is not True:
            errors.append("%s: may run as root" % name)

    for _, svc in [(k, d) for k, d in by.items() if k[0] == "Service"]:
        sel = svc["spec"].get("selector", {})
        match = [n for n, (_, t) in workloads.items()
                 if all(t["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if not sel or not match:
            errors.append("Service %s selects no workload (%r)" % (svc["metadata"]["name"], sel))
            continue
        names = {p.get("name") for n in match for c in workloads[n][1]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                errors.append("Service %s: targetPort %r is no port of %s" % (svc["metadata"]["name"], p["targetPort"], match))

    store = by.get(("StatefulSet", "store"))
    if not store:
        errors.append("the store is not a StatefulSet")
    else:
        if store["spec"].get("replicas") != 1:
            errors.append("the store (the one SQLite writer) must have exactly 1 replica")
        claims = {t["metadata"]["name"] for t in store["spec"].get("volumeClaimTemplates", [])}
        c = store["spec"]["template"]["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        args = c.get("args", [])
        data_dir = args[args.index("--data-dir") + 1] if "--data-dir" in args else None
        if not any(mounts.get(n) == data_dir for n in claims):
            errors.append("the store's --data-dir %r is not on its volume claim (%r, %r)" % (data_dir, claims, mounts))
    for role in ("router", "auth"):
        d = by.get(("Deployment", role))
        if not d or d["spec"].get("replicas") != 1 or d["spec"].get("strategy", {}).get("type") != "Recreate":
            errors.append("%s: a Deployment of exactly 1 replica, Recreate (never two at once)" % role)
    gw = by.get(("Deployment", "gateway"))
    if not gw:
        errors.append("no gateway Deployment")
    else:
        c = gw["spec"]["template"]["spec"]["containers"][0]
        probe = c.get("readinessProbe", {}).get("httpGet", {})
        if probe.get("path") != "/readyz":
            errors.append("the gateways' readiness is not /readyz: %r" % probe)
        if ("Service", "gateway") not in by:
            errors.append("no gateway Service")

    # CURVE: every role reads the deployment's keys where QMS_CURVE_KEYS says,
    # from the Secret, laid out as `qmessageserver keys` writes them.
    keys_dir = endpoints.get("QMS_CURVE_KEYS")
    if not keys_dir:
        errors.append("QMS_CURVE_KEYS is not set: the links between roles are not authenticated")
    for name, (_, tmpl) in workloads.items():
        got = curve_layout(tmpl, keys_dir)
        if got != CURVE_LAYOUT:
            errors.append("%s: the keys at %s would be %r, not %r" % (name, keys_dir, got, CURVE_LAYOUT))
        if tmpl["spec"].get("securityContext", {}).get("fsGroup") != 10001:
            errors.append("%s: no fsGroup 10001: the pod's user cannot read the keys" % name)

    # Endpoints: each names a Service on the right port; each role binds its own on '*'.
    for var, value in endpoints.items():
        if not var.endswith("_ENDPOINT"):
            continue
        m = re.match(r"^tcp://([a-z0-9-]+):(\d+)$", value)
        if not m:
            errors.append("%s=%s is not tcp://SERVICE:PORT" % (var, value))
            continue
        svc = by.get(("Service", m.group(1)))
        if not svc or int(m.group(2)) not in [p["port"] for p in svc["spec"]["ports"]]:
            errors.append("%s=%s: no Service %s with port %s" % (var, value, m.group(1), m.group(2)))
    for role, port in ROLES.items():
        if role not in workloads:
            continue
        c = workloads[role][1]["spec"]["containers"][0]
        own = {e["name"]: e.get("value") for e in c.get("env", [])}.get("QMS_%s_ENDPOINT" % ("LOG" if role == "monitor" else role.upper()))
        if own != "tcp://*:%d" % port:
            errors.append("%s: binds %r, not tcp://*:%d (a Service address cannot be bound)" % (role, own, port))
        if port not in [p["containerPort"] for p in c.get("ports", [])]:
            errors.append("%s: port %d is not a container port" % (role, port))
    return errors


def binary_errors(docs, tmp):
    """Each container's arguments and environment, given to the real binary
    with --print-config (paths inside the image mapped to local ones)."""
    errors = []
    endpoints = {}
    for _, d in docs:
        if d["kind"] == "ConfigMap":
            endpoints.update(d.get("data", {}))
    local = {"/data": tmp, "/usr/share/qmessageserver/html": os.path.join(SOURCE_DIR, "html"),
             "/keys": os.path.join(tmp, "keys")}
    for name, (_, tmpl) in pod_specs(docs).items():
        for c in tmpl["spec"]["containers"]:
            args = [local.get(a, a) for a in c.get("args", [])]
            env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
            env.update(endpoints)
            env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
            env = {k: local.get(v, v) for k, v in env.items()}
            p = subprocess.run([BINARY] + args + ["--print-config"], capture_output=True, text=True,
                               env=env, cwd=tmp, timeout=30)
            if p.returncode != 0:
                errors.append("%s: the binary refuses %r: %s" % (name, c.get("args"), (p.stderr or p.stdout).strip()[-400:]))
    return errors


def all_errors(directory, tmp):
    kust, docs = load(directory)
    errors = []
    for name, d in docs:
        errors += doc_errors(d, name)
    example = os.path.join(directory, "ingress-example.yaml")
    if os.path.exists(example):
        with open(example) as f:
            for d in yaml.safe_load_all(f):
                errors += doc_errors(d, "ingress-example.yaml")
    if not errors:                   # the rest assumes well-formed objects
        errors += project_errors(docs)
        errors += binary_errors(docs, tmp)
    return errors


class Manifests(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qms-k8s-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_manifests_are_valid(self):
        kust, docs = load(K8S_DIR)
        kinds = sorted({d["kind"] for _, d in docs})
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "Namespace", "PodDisruptionBudget",
                                 "Service", "StatefulSet"])
        self.assertEqual(all_errors(K8S_DIR, self.tmp), [])

    def test_kubectl_kustomize_builds_them(self):
        kubectl = shutil.which("kubectl")
        if not kubectl:
            self.skipTest("kubectl is not installed (the schema check above does not need it)")
        p = subprocess.run([kubectl, "kustomize", K8S_DIR], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, KUBECONFIG=os.devnull))
        self.assertEqual(p.returncode, 0, p.stderr)
        built = [d for d in yaml.safe_load_all(p.stdout) if d]
        _, docs = load(K8S_DIR)
        self.assertEqual(len(built), len(docs))
        for d in built:
            self.assertEqual(doc_errors(d, "kustomize"), [])
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), "qmessageserver", d["metadata"]["name"])
        images = {c["image"] for d in built if d["kind"] in ("Deployment", "StatefulSet")
                  for c in d["spec"]["template"]["spec"]["containers"]}
        self.assertEqual(len(images), 1, images)
        self.assertNotEqual(images, {"qmessageserver"}, "kustomization's images: sets the registry")


class CurveKeys(unittest.TestCase):
    """The keys as the manifests mount them (made by the real binary, laid
    out from the Secret's items) are what a role needs: it starts with
    CURVE on, and a peer without them is refused."""

    def test_a_role_runs_on_the_mounted_keys(self):
        tmp = tempfile.mkdtemp(prefix="qms-k8s-keys-")
        self.addCleanup(shutil.rmtree, tmp, True)
        made = os.path.join(tmp, "made")
        subprocess.run([BINARY, "keys", made], check=True, capture_output=True, timeout=30)
        kust, docs = load(K8S_DIR)
        layout = curve_layout(pod_specs(docs)["store"][1], "/keys")
        mounted = os.path.join(tmp, "keys")
        for path, key in layout.items():        # what kubelet writes, mode 0440
            os.makedirs(os.path.dirname(os.path.join(mounted, path)), exist_ok=True)
            shutil.copy(os.path.join(made, key), os.path.join(mounted, path))
            os.chmod(os.path.join(mounted, path), 0o440)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
        env.update(QMS_CURVE_KEYS=mounted, QMS_STORE_ENDPOINT="tcp://127.0.0.1:%d" % port)
        os.makedirs(os.path.join(tmp, "data"))
        proc = subprocess.Popen([BINARY, "store", "--data-dir", os.path.join(tmp, "data")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "event=ready" in line or "event=exit" in line:
                    break
            log = "".join(lines)
            self.assertIn("event=ready", log)
            self.assertIn('event=on keys="%s" clients=1' % mounted, log)
            self.assertNotIn("links_unauthenticated", log)
            # a probe without the keys gets no answer from a CURVE store
            probe = subprocess.run([BINARY, "--health", "store", "--store-endpoint", "tcp://127.0.0.1:%d" % port],
                                   env={k: v for k, v in env.items() if k != "QMS_CURVE_KEYS"},
                                   capture_output=True, text=True, timeout=30)
            self.assertNotEqual(probe.returncode, 0, probe.stdout + probe.stderr)
            probe = subprocess.run([BINARY, "--health", "store", "--store-endpoint", "tcp://127.0.0.1:%d" % port],
                                   env=env, capture_output=True, text=True, timeout=30)
            self.assertEqual(probe.returncode, 0, probe.stdout + probe.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            proc.stdout.close()


class Broken(unittest.TestCase):
    """Each check fails on a manifest broken on purpose."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="qms-k8s-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.dir = os.path.join(self.tmp, "k8s")
        shutil.copytree(K8S_DIR, self.dir)

    def edit(self, file_name, fn):
        path = os.path.join(self.dir, file_name)
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            fn(d)
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)

    def expect(self, pattern):
        errors = all_errors(self.dir, os.path.join(self.tmp))
        self.assertTrue(any(re.search(pattern, e) for e in errors), "expected %r among %r" % (pattern, errors))

    @staticmethod
    def container(d):
        return d["spec"]["template"]["spec"]["containers"][0]

    def test_unknown_field(self):
        self.edit("gateway.yaml", lambda d: d["kind"] == "Deployment" and self.container(d).update(readinesProbe={}))
        self.expect(r"readinesProbe: no such field in V1Container")

    def test_wrong_type(self):
        self.edit("router.yaml", lambda d: d["kind"] == "Deployment" and d["spec"].update(replicas="1"))
        self.expect(r"spec.replicas: int is expected")

    def test_missing_required_field(self):
        self.edit("auth.yaml", lambda d: d["kind"] == "Deployment" and self.container(d).pop("name"))
        self.expect(r"`name`, must not be `None`")

    def test_selector_mismatch(self):
        self.edit("auth.yaml", lambda d: d["kind"] == "Deployment"
                  and d["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "autth"}))
        self.expect(r"auth: selector .* does not match")

    def test_two_stores(self):
        self.edit("store.yaml", lambda d: d["kind"] == "StatefulSet" and d["spec"].update(replicas=2))
        self.expect(r"exactly 1 replica")

    def test_store_data_off_the_volume(self):
        self.edit("store.yaml", lambda d: d["kind"] == "StatefulSet"
                  and self.container(d)["volumeMounts"][0].update(mountPath="/var/data"))
        self.expect(r"--data-dir '/data' is not on its volume claim")

    def test_gateway_readiness(self):
        self.edit("gateway.yaml", lambda d: d["kind"] == "Deployment"
                  and self.container(d)["readinessProbe"]["httpGet"].update(path="/healthz"))
        self.expect(r"readiness is not /readyz")

    def test_probe_on_unnamed_port(self):
        self.edit("gateway.yaml", lambda d: d["kind"] == "Deployment"
                  and self.container(d)["livenessProbe"]["httpGet"].update(port="metric"))
        self.expect(r"livenessProbe on port 'metric'")

    def test_endpoint_names_no_service(self):
        self.edit("endpoints.yaml", lambda d: d["data"].update(QMS_ROUTER_ENDPOINT="tcp://routr:5557"))
        self.expect(r"no Service routr")

    def test_role_binding_a_service_name(self):
        self.edit("router.yaml", lambda d: d["kind"] == "Deployment" and self.container(d).pop("env"))
        self.expect(r"router: binds None")

    def test_keys_not_mounted(self):
        self.edit("auth.yaml", lambda d: d["kind"] == "Deployment" and self.container(d).pop("volumeMounts"))
        self.expect(r"auth: the keys at /keys would be \{\}")

    def test_keys_without_the_clients_list(self):
        self.edit("router.yaml", lambda d: d["kind"] == "Deployment"
                  and d["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"].pop())
        self.expect(r"router: the keys at /keys would be")

    def test_keys_the_user_cannot_read(self):
        self.edit("gateway.yaml", lambda d: d["kind"] == "Deployment"
                  and d["spec"]["template"]["spec"]["securityContext"].pop("fsGroup"))
        self.expect(r"gateway: no fsGroup 10001")

    def test_argument_the_binary_refuses(self):
        self.edit("gateway.yaml", lambda d: d["kind"] == "Deployment"
                  and self.container(d)["args"].extend(["--max-connections", "many"]))
        self.expect(r"gateway: the binary refuses")


if __name__ == "__main__":
    unittest.main(verbosity=2)
