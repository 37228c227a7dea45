"""Checks the rendered kustomize overlays (one YAML stream per overlay, made by
deploy/check/kustomize.sh) for what the schemas cannot see: the settings
deploy/README.md promises, and the Prometheus Operator objects, whose CRD
schemas kubernetes-validate does not have.

usage: manifests.py RULES_FILE OVERLAY=RENDERED.yaml ...
Exits 1 naming every broken expectation.
"""

import sys
import tomllib

import yaml

failures = []


def expect(cond, overlay, what):
    if not cond:
        failures.append(f"{overlay}: {what}")


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def check(overlay, objs, rules):
    sts = one(objs, "StatefulSet", "admit")
    expect(sts is not None, overlay, "one StatefulSet admit")
    if sts is None:
        return
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["selector"]["matchLabels"]
    expect(labels and labels.items() <= spec["template"]["metadata"]["labels"].items(), overlay,
           "the StatefulSet selector matches its pod labels")
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    psc = pod.get("securityContext", {})
    expect(sc.get("readOnlyRootFilesystem") is True, overlay, "readOnlyRootFilesystem")
    expect(sc.get("runAsNonRoot") is True and psc.get("runAsNonRoot") is True, overlay, "runAsNonRoot")
    expect(psc.get("runAsUser", 0) != 0, overlay, "a non-root runAsUser")
    expect(sc.get("allowPrivilegeEscalation") is False, overlay, "allowPrivilegeEscalation false")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], overlay, "capabilities drop ALL")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", overlay, "seccomp RuntimeDefault")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        expect(c.get(probe, {}).get("grpc", {}).get("port") == 50051, overlay, f"{probe} is a grpc probe on 50051")
    res = c.get("resources", {})
    for k in ("cpu", "memory"):
        expect(k in res.get("requests", {}) and k in res.get("limits", {}), overlay, f"{k} request and limit")
    expect(pod.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution"),
           overlay, "required pod anti-affinity across nodes")
    expect(any(t["topologyKey"] == "topology.kubernetes.io/zone" for t in pod.get("topologySpreadConstraints", [])),
           overlay, "topology spread across zones")
    expect([v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])] == ["data"], overlay,
           "a volumeClaimTemplate 'data'")
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    expect(mounts.get("data") == "/data", overlay, "the data volume at /data")

    # configuration: the ConfigMaps the pod uses exist; the TOML parses
    cm_names = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    conf_vol = [v for v in pod["volumes"] if v["name"] == "config"]
    conf = cm_names.get(conf_vol[0]["configMap"]["name"]) if conf_vol else None
    expect(conf is not None, overlay, "the config volume's ConfigMap is rendered")
    env_cm = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
    start = cm_names.get(env_cm[0]) if env_cm else None
    expect(start is not None, overlay, "the admit-start ConfigMap is rendered")
    if conf is None or start is None:
        return
    toml = tomllib.loads(conf["data"]["admitd.toml"])
    env = start["data"]
    expect(toml.get("metrics_listen", "").endswith(":9464"), overlay, "metrics on port 9464")
    state = env.get("ADMIT_CLUSTER_STATE")
    replicas = spec.get("replicas", 1)
    if overlay == "dev":
        expect(state == "single" and replicas == 1 and "peers" not in toml, overlay, "one node, no peers")
    else:
        want = "new" if overlay.endswith("bootstrap") else "existing"
        expect(state == want, overlay, f"ADMIT_CLUSTER_STATE={want}")
        peers = toml.get("peers", [])
        expect(replicas == 3 and len(peers) == 3 and int(env.get("ADMIT_INITIAL_NODES", 0)) == 3
               and toml.get("replicas") == 3, overlay, "3 nodes, 3 peers, 3 replicas per shard")
        svc = env.get("ADMIT_PEER_SERVICE")
        # the address admit-start advertises for a pod must be its peers entry
        for i, p in enumerate(peers):
            expect(p == f"{i + 1}={sts['metadata']['name']}-{i}.{svc}:50051", overlay,
                   f"peers entry {p!r} is pod {i}'s address")

    # services: peers headless and publishing not-ready pods; client service
    peers_svc = one(objs, "Service", env.get("ADMIT_PEER_SERVICE", "admit-peers"))
    expect(peers_svc is not None and peers_svc["spec"].get("clusterIP") == "None"
           and peers_svc["spec"].get("publishNotReadyAddresses") is True
           and sts["spec"]["serviceName"] == peers_svc["metadata"]["name"], overlay,
           "a headless peers Service, governing the StatefulSet, with not-ready addresses")
    client = one(objs, "Service", env.get("ADMIT_JOIN_VIA", "").split(":")[0])
    expect(client is not None and client["spec"]["selector"].items() <= labels.items(), overlay,
           "the client Service (ADMIT_JOIN_VIA) selects the pods")
    pdb = one(objs, "PodDisruptionBudget")
    expect(pdb is not None and pdb["spec"]["selector"]["matchLabels"] == labels, overlay,
           "a PodDisruptionBudget over the pods")

    # Prometheus Operator objects (no schema in kubernetes-validate): checked here
    sm = one(objs, "ServiceMonitor")
    rule = one(objs, "PrometheusRule")
    if overlay == "dev":
        expect(sm is None and rule is None, overlay, "no operator objects (dev has no operator)")
        return
    expect(sm is not None and rule is not None, overlay, "a ServiceMonitor and a PrometheusRule")
    if sm is None or rule is None:
        return
    sel = sm["spec"]["selector"]["matchLabels"]
    expect(peers_svc is not None and sel.items() <= peers_svc["metadata"]["labels"].items(), overlay,
           "the ServiceMonitor selects the peers Service (every pod, ready or not)")
    ports = {p["name"] for p in peers_svc["spec"]["ports"]} if peers_svc else set()
    expect([e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"] and "metrics" in ports, overlay,
           "the ServiceMonitor scrapes the peers Service's metrics port")
    job = peers_svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), "") if peers_svc else ""
    expect(job == "admit", overlay, "scrape job 'admit' (the alerts' up{job=\"admit\"})")
    expect(rule["spec"] == rules, overlay, "the PrometheusRule holds deploy/prometheus/admit-rules.yaml")


def main():
    with open(sys.argv[1]) as f:
        rules = yaml.safe_load(f)
    for arg in sys.argv[2:]:
        overlay, path = arg.split("=", 1)
        with open(path) as f:
            objs = [o for o in yaml.safe_load_all(f) if o]
        check(overlay, objs, rules)
        print(f"manifests: {overlay}: {len(objs)} objects checked")
    for f in failures:
        print(f"manifests: FAIL {f}")
    sys.exit(1 if failures else 0)


main()
