"""Cluster routes: status, nodes, virtual servers, resources, explain.

Every change goes through :mod:`clustermail.admin.intents` (what the CLI writes)
and is written to the event log with the administrator's name.
"""

from __future__ import annotations

import time
from typing import Any

from clustermail.admin import intents
from clustermail.admin.api.routing import (
    ANY_OBJECT,
    BOOLEAN,
    INTEGER,
    STRING,
    STRINGS,
    Call,
    Role,
    Route,
    array,
    invalid,
    not_found,
    nullable,
    obj,
)
from clustermail.admin.status import build_status
from clustermail.cluster.view import ClusterView

OP, VIEW = Role.OPERATOR, Role.VIEWER

NODE = obj({
    "name": STRING, "state": STRING, "pid": nullable(INTEGER), "leader": BOOLEAN,
    "metrics_url": nullable(STRING), "virtual_servers": STRINGS,
}, additional=True)
RESOURCE = obj({
    "name": STRING, "type": STRING, "state": STRING, "depends_on": STRINGS,
    "admin_offline": BOOLEAN, "properties": ANY_OBJECT,
}, additional=True)
VIRTUAL_SERVER = obj({
    "name": STRING, "kind": STRING, "state": STRING, "owner": nullable(STRING),
    "address": nullable(STRING), "reason": STRING, "epoch": nullable(INTEGER),
    "resources": ANY_OBJECT, "preferred_owners": STRINGS,
}, additional=True)
DETAIL = obj({**VIRTUAL_SERVER["properties"], "resource_list": array(RESOURCE),
              "move": nullable(ANY_OBJECT)}, additional=True)
STATUS = obj({"cluster": STRING, "revision": INTEGER, "leader": nullable(STRING),
              "nodes": array(NODE), "virtual_servers": array(VIRTUAL_SERVER)},
             additional=True)
DONE = obj({"done": STRING}, additional=True)


async def _view(call: Call) -> ClusterView:
    return await intents.current_view(call.ctx.store)


def status_document(view: ClusterView) -> dict[str, Any]:
    """`status --json` with, per node, what it runs, and per virtual server its kind and
    preferred owners."""
    status = build_status(view)
    config = view.cluster_config
    for node in status["nodes"]:
        node["virtual_servers"] = [v["name"] for v in status["virtual_servers"]
                                   if v["owner"] == node["name"]]
    for vs in status["virtual_servers"]:
        model = config.virtual_server(vs["name"]) if config is not None else None
        vs["kind"] = model.kind.value if model is not None else "virtual_server"
        vs["preferred_owners"] = list(model.preferred_owners) if model is not None else []
    return status


async def get_status(call: Call) -> Any:
    return status_document(await _view(call))


async def list_nodes(call: Call) -> Any:
    return status_document(await _view(call))["nodes"]


def _node(status: dict[str, Any], name: str) -> dict[str, Any]:
    for node in status["nodes"]:
        if node["name"] == name:
            return dict(node)
    raise not_found(f"no node named {name!r} "
                    f"(nodes: {', '.join(n['name'] for n in status['nodes'])})")


async def get_node(call: Call) -> Any:
    return _node(status_document(await _view(call)), call.param("name"))


async def pause_node(call: Call) -> Any:
    name = call.param("name")
    await intents.pause_node(call.ctx.store, name, True)
    await call.ctx.log_change(call.user, "node.pause", f"paused {name}")
    return {"done": f"{name} paused"}


async def resume_node(call: Call) -> Any:
    name = call.param("name")
    await intents.pause_node(call.ctx.store, name, False)
    await call.ctx.log_change(call.user, "node.resume", f"resumed {name}")
    return {"done": f"{name} resumed"}


async def evict_node(call: Call) -> Any:
    name = call.param("name")
    await intents.evict_node(call.ctx.store, name)
    await call.ctx.log_change(call.user, "node.evict", f"evicted {name}")
    return {"done": f"{name} evicted from the cluster configuration"}


# --------------------------------------------------------------------------- virtual servers


async def list_virtual_servers(call: Call) -> Any:
    return status_document(await _view(call))["virtual_servers"]


def resources_of(view: ClusterView, vs: str) -> list[dict[str, Any]]:
    server = intents.applied_config(view).virtual_server(vs)
    status = view.status.get(vs)
    out = []
    order = server.online_order() if server is not None else ()
    for res in (r for name in order if server is not None and (r := server.resource(name))):
        out.append({
            "name": res.name, "type": res.type,
            "state": status.resources.get(res.name, "offline") if status else "offline",
            "depends_on": list(res.depends_on),
            "admin_offline": view.resource_intent(vs, res.name).offline,
            "properties": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in res.properties.items()},
        })
    return out


async def get_virtual_server(call: Call) -> Any:
    name = call.param("name")
    view = await _view(call)
    intents.check_vs(view, name)
    vs = next(v for v in status_document(view)["virtual_servers"] if v["name"] == name)
    intent = view.vs_intent(name)
    vs["resource_list"] = resources_of(view, name)
    vs["admin_offline"] = intent.offline
    vs["move"] = None if intent.move_id is None else {
        "id": intent.move_id, "to": intent.move_to, "done": intent.move_done == intent.move_id,
        "refused": intent.move_result or None}
    history = view.failures.get(name)
    vs["failovers"] = [e.to_json() for e in history.entries] if history else []
    return vs


async def move_virtual_server(call: Call) -> Any:
    name = call.param("name")
    to = call.body.get("to")
    move_id = await intents.move_vs(call.ctx.store, name, to)
    await call.ctx.log_change(call.user, "vs.move",
                              f"asked to move {name} to {to or 'the best other node'}",
                              vs=name, move_id=move_id)
    return {"vs": name, "to": to, "move_id": move_id,
            "done": f"move of {name} requested"}


async def vs_online(call: Call) -> Any:
    name = call.param("name")
    await intents.set_vs_offline(call.ctx.store, name, False)
    await call.ctx.log_change(call.user, "vs.online", f"brought {name} online", vs=name)
    return {"done": f"{name}: online requested"}


async def vs_offline(call: Call) -> Any:
    name = call.param("name")
    await intents.set_vs_offline(call.ctx.store, name, True)
    await call.ctx.log_change(call.user, "vs.offline", f"took {name} offline", vs=name)
    return {"done": f"{name}: offline requested"}


async def vs_clear_failures(call: Call) -> Any:
    name = call.param("name")
    await intents.clear_failures(call.ctx.store, name)
    await call.ctx.log_change(call.user, "vs.clear_failures",
                              f"cleared the failover history of {name}", vs=name)
    return {"done": f"failover history of {name} cleared"}


async def explain_virtual_server(call: Call) -> Any:
    from clustermail.cluster.leader import explain_vs

    name = call.param("name")
    view = await _view(call)
    intents.check_vs(view, name)
    return {"vs": name, "explanation": explain_vs(view, name, time.time())}


# --------------------------------------------------------------------------- resources


async def list_resources(call: Call) -> Any:
    name = call.param("name")
    view = await _view(call)
    intents.check_vs(view, name)
    return resources_of(view, name)


async def add_resource(call: Call) -> Any:
    name = call.param("name")
    body = call.body
    added = await intents.add_resource(call.ctx.store, name, body["type"], name=body.get("name"),
                                       depends_on=body.get("depends_on"),
                                       properties=body.get("properties"))
    await call.ctx.log_change(call.user, "resource.add",
                              f"added {body['type']} resource {name}/{added}", vs=name,
                              resource=added)
    return {"vs": name, "resource": added, "done": f"{name}/{added} added"}


async def remove_resource(call: Call) -> Any:
    name, res = call.param("name"), call.param("resource")
    await intents.remove_resource(call.ctx.store, name, res)
    await call.ctx.log_change(call.user, "resource.remove", f"removed {name}/{res}", vs=name,
                              resource=res)
    return {"done": f"{name}/{res} removed"}


async def resource_online(call: Call) -> Any:
    name, res = call.param("name"), call.param("resource")
    await intents.set_resource_offline(call.ctx.store, name, res, False)
    await call.ctx.log_change(call.user, "resource.online", f"brought {name}/{res} online",
                              vs=name, resource=res)
    return {"done": f"{name}/{res}: online requested"}


async def resource_offline(call: Call) -> Any:
    name, res = call.param("name"), call.param("resource")
    await intents.set_resource_offline(call.ctx.store, name, res, True)
    await call.ctx.log_change(call.user, "resource.offline", f"took {name}/{res} offline",
                              vs=name, resource=res)
    return {"done": f"{name}/{res}: offline requested"}


async def get_config(call: Call) -> Any:
    view = await _view(call)
    return view.config


async def put_config(call: Call) -> Any:
    from clustermail.admin.local import apply_config
    from clustermail.cluster.config import ConfigError, config_from_dict

    try:
        config = config_from_dict(call.body, "the configuration")
    except ConfigError as exc:
        raise invalid(str(exc)) from None
    revision = await apply_config(call.ctx.store, config)
    await call.ctx.log_change(call.user, "config.apply", "applied a new configuration "
                              f"(store revision {revision})")
    return {"revision": revision, "done": "configuration applied"}


MOVE_BODY = obj({"to": nullable(STRING)})
ADD_RESOURCE = obj({"type": STRING, "name": STRING, "depends_on": STRINGS,
                    "properties": ANY_OBJECT}, required=["type"])
VS = "/virtual-servers/{name}"

ROUTES = [
    Route("GET", "/config", get_config, "The applied configuration (the cluster file's "
          "JSON form, as `config show`)", "cluster", VIEW, response=ANY_OBJECT),
    Route("PUT", "/config", put_config, "Validate and apply a configuration (as `config "
          "apply`; the body is the JSON form of the cluster file)", "cluster", OP,
          body=ANY_OBJECT, body_required=True,
          response=obj({"revision": INTEGER, "done": STRING})),
    Route("GET", "/status", get_status, "The cluster at a glance (the `status --json` "
          "document)", "cluster", VIEW, response=STATUS),
    Route("GET", "/nodes", list_nodes, "List nodes", "nodes", VIEW, response=array(NODE)),
    Route("GET", "/nodes/{name}", get_node, "One node", "nodes", VIEW, response=NODE),
    Route("POST", "/nodes/{name}/pause", pause_node, "Pause a node: it keeps what it runs "
          "and takes nothing new", "nodes", OP, response=DONE),
    Route("POST", "/nodes/{name}/resume", resume_node, "Resume a paused node", "nodes", OP,
          response=DONE),
    Route("POST", "/nodes/{name}/evict", evict_node, "Remove a node that is down from the "
          "configuration", "nodes", OP, response=DONE),
    Route("GET", "/virtual-servers", list_virtual_servers, "List virtual servers (the "
          "cluster group included)", "virtual servers", VIEW, response=array(VIRTUAL_SERVER)),
    Route("GET", VS, get_virtual_server, "One virtual server with its resources, move and "
          "failovers", "virtual servers", VIEW, response=DETAIL),
    Route("POST", VS + "/move", move_virtual_server, "Move a virtual server (to a node, or "
          "the best other node); answers at once, the leader carries it out",
          "virtual servers", OP, body=MOVE_BODY, status=202,
          response=obj({"vs": STRING, "to": nullable(STRING), "move_id": STRING,
                        "done": STRING})),
    Route("POST", VS + "/online", vs_online, "Bring a virtual server online",
          "virtual servers", OP, response=DONE),
    Route("POST", VS + "/offline", vs_offline, "Take a virtual server offline and keep it "
          "offline", "virtual servers", OP, response=DONE),
    Route("POST", VS + "/clear-failures", vs_clear_failures, "Forget a virtual server's "
          "failover history", "virtual servers", OP, response=DONE),
    Route("GET", VS + "/explain", explain_virtual_server, "Why it runs where it runs",
          "virtual servers", VIEW, response=obj({"vs": STRING, "explanation": STRING})),
    Route("GET", VS + "/resources", list_resources, "A virtual server's resources",
          "resources", VIEW, response=array(RESOURCE)),
    Route("POST", VS + "/resources", add_resource, "Add a resource (its owner brings it "
          "online live), e.g. {\"type\": \"pop3\"} enables POP3", "resources", OP,
          body=ADD_RESOURCE, body_required=True, status=201,
          response=obj({"vs": STRING, "resource": STRING, "done": STRING})),
    Route("DELETE", VS + "/resources/{resource}", remove_resource, "Remove a resource "
          "(taken offline live)", "resources", OP, response=DONE),
    Route("POST", VS + "/resources/{resource}/online", resource_online, "Bring a resource "
          "back online", "resources", OP, response=DONE),
    Route("POST", VS + "/resources/{resource}/offline", resource_offline, "Take a resource "
          "(and what depends on it) offline", "resources", OP, response=DONE),
]
