"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /openapi.json``.

A test checks that every route the app registers is described here and that
nothing described is missing from the app, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from realtime.events import EVENT_TYPES, event_schemas
from realtime.web.haproxy_config import SESSION_HEADER

_ERROR = {"$ref": "#/components/schemas/Error"}
_SESSION_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad request (malformed JSON, SDP or fields)",
        401: "missing token",
        403: "wrong token or origin not allowed",
        404: "no such session (or avatar, or job)",
        409: "the avatar is in use by a session",
        415: "not an image or a video we read",
        422: "the upload is truncated or corrupt, too short or long, or has no face or several",
        413: "body or text too large",
        429: "too many new sessions from this address (Retry-After)",
        503: "at capacity or shutting down (Retry-After)",
    }
    return {str(c): {"description": text[c], **_json(_ERROR)} for c in codes}


def _session_op(summary: str, body: dict[str, Any] | None, ok: str = "200") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_SESSION_ID],
        "responses": {
            ok: {"description": "done", **_json({"type": "object"})},
            **_errors(400, 401, 403, 404),
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "splatcast",
            "version": "1",
            "description": "Real-time conversational avatar server. Session routes need the session's token "
            "(from /api/offer) or the server token as `Authorization: Bearer`; with --token set, every /api "
            "route needs the server token.",
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Offer": {
                    "type": "object",
                    "required": ["sdp", "type"],
                    "properties": {
                        "sdp": {"type": "string", "maxLength": 65536},
                        "type": {"const": "offer"},
                        "expressiveness": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "this session's expressiveness (default: the server's, 0.6)",
                        },
                        "avatar": {
                            "type": "string",
                            "maxLength": 64,
                            "description": "a library id (GET /api/avatars)",
                        },
                    },
                },
                "Avatar": {
                    "type": "object",
                    "required": ["id", "name", "source", "preview"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "created": {
                            "type": "string",
                            "description": "ISO 8601 UTC; empty for the bundled one",
                        },
                        "source": {"enum": ["photo", "video", "file", "bundled"]},
                        "voice": {
                            "type": ["string", "null"],
                            "description": "voice id; null: the server's default",
                        },
                        "preview": {"type": "string", "description": "URL of the preview PNG"},
                        "gaussians": {"type": "integer"},
                        "bytes": {"type": "integer"},
                        "builder": {"type": "string"},
                        "bundled": {"type": "boolean"},
                        "in_use": {"type": "boolean"},
                    },
                },
                "BuildJob": {
                    "type": "object",
                    "properties": {
                        "type": {"const": "build"},
                        "job": {"type": "string"},
                        "avatar": {"type": "string", "description": "the id the avatar gets when done"},
                        "name": {"type": "string"},
                        "kind": {"enum": ["photo", "video"]},
                        "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
                        "stage": {"type": "string"},
                        "progress": {"type": "number", "minimum": 0, "maximum": 1},
                        "position": {"type": "integer", "description": "builds ahead of this one"},
                        "message": {"type": "string"},
                        "error": {"type": ["string", "null"]},
                        "builder": {"type": "string"},
                    },
                },
                "Voice": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "language": {"type": "string"},
                        "sample_rate": {"type": "integer"},
                        "phoneme_type": {"type": "string"},
                        "speakers": {"type": "integer"},
                        "bundled": {"type": "boolean"},
                        "default": {"type": "boolean"},
                    },
                },
                "Answer": {
                    "type": "object",
                    "required": ["sdp", "type", "session_id", "token"],
                    "properties": {
                        "sdp": {"type": "string"},
                        "type": {"const": "answer"},
                        "session_id": {"type": "string"},
                        "token": {"type": "string"},
                        "avatar": {"type": "string"},
                    },
                },
                **event_schemas(),
                "Event": {
                    "description": "one JSON object per websocket message; `type` says which kind",
                    "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in event_schemas()],
                },
                "SessionInfo": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "state": {"enum": ["idle", "speaking", "listening"]},
                        "connection": {"type": "string"},
                        "age_s": {"type": "number"},
                        "frames": {"type": "integer"},
                        "repeated": {"type": "integer"},
                        "level": {"type": "integer"},
                        "client": {
                            "type": ["string", "null"],
                            "description": "address that created it (the real client behind --trusted-proxies)",
                        },
                        "avatar": {"type": "string"},
                    },
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/": {
                "get": {"summary": "the browser client", "responses": {"200": {"description": "HTML page"}}}
            },
            "/openapi.json": {
                "get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI"}}}
            },
            "/healthz": {
                "get": {
                    "summary": "health and free capacity (for load balancers)",
                    "responses": {
                        "200": {
                            "description": "serving",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string"},
                                        "sessions": {"type": "integer"},
                                        "capacity": {"type": "integer"},
                                        "replica": {
                                            "type": "string",
                                            "description": "this server: host:port",
                                        },
                                    },
                                }
                            ),
                        },
                        "503": {"description": "draining"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (stage timing histograms, sessions, frames)",
                    "responses": {"200": {"description": "text/plain exposition"}, **_errors(401, 403)},
                }
            },
            "/api/config": {
                "get": {
                    "summary": "client configuration (ICE servers)",
                    "responses": {
                        "200": {"description": "config", **_json({"type": "object"})},
                        **_errors(401),
                    },
                }
            },
            "/api/offer": {
                "post": {
                    "summary": "start a session: SDP offer in, SDP answer + session id + session token out",
                    "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/Offer"})},
                    "responses": {
                        "200": {
                            "description": "answer",
                            "headers": {
                                SESSION_HEADER: {
                                    "description": "the new session's id, for a balancer's session affinity",
                                    "schema": {"type": "string"},
                                }
                            },
                            **_json({"$ref": "#/components/schemas/Answer"}),
                        },
                        **_errors(400, 401, 403, 413, 429, 503),
                    },
                }
            },
            "/api/sessions": {
                "get": {
                    "summary": "active sessions",
                    "responses": {
                        "200": {
                            "description": "list",
                            **_json({"type": "array", "items": {"$ref": "#/components/schemas/SessionInfo"}}),
                        },
                        **_errors(401, 403),
                    },
                }
            },
            "/api/sessions/{id}": {"delete": _session_op("end a session", None)},
            "/api/sessions/{id}/say": {
                "post": _session_op(
                    "the avatar speaks this text",
                    {
                        "type": "object",
                        "required": ["text"],
                        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 5000}},
                    },
                    ok="202",
                )
            },
            "/api/sessions/{id}/interrupt": {"post": _session_op("stop speaking now", None)},
            "/api/sessions/{id}/emotion": {
                "post": _session_op(
                    "hold an emotion (it wins over the ones inferred from each sentence); auto: let go",
                    {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"enum": ["neutral", "happy", "sad", "surprised", "thinking", "auto"]},
                            "intensity": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                )
            },
            "/api/sessions/{id}/expressiveness": {
                "post": _session_op(
                    "how expressive the face is: emotion from what is said, emphasis from the voice, "
                    "listening reactions (0: off)",
                    {
                        "type": "object",
                        "required": ["value"],
                        "properties": {"value": {"type": "number", "minimum": 0, "maximum": 1}},
                    },
                )
            },
            "/api/sessions/{id}/events": {
                "get": {
                    "summary": "websocket of JSON events (components/schemas/Event): "
                    + ", ".join(EVENT_TYPES)
                    + "; the client may send {type: say|interrupt|emotion|expressiveness, ...}",
                    "parameters": [
                        _SESSION_ID,
                        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
                    ],
                    "responses": {"101": {"description": "websocket upgrade"}, **_errors(401, 403, 404)},
                }
            },
            **_avatar_paths(),
        },
    }


_AVATAR_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
_JOB_ID = {"name": "job", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def _avatar_paths() -> dict[str, Any]:
    avatar = {"$ref": "#/components/schemas/Avatar"}
    job = {"$ref": "#/components/schemas/BuildJob"}
    return {
        "/api/avatars": {
            "get": {
                "summary": "the avatar library (the bundled default first)",
                "responses": {
                    "200": {"description": "list", **_json({"type": "array", "items": avatar})},
                    **_errors(401, 403),
                },
            },
            "post": {
                "summary": "create an avatar from a photo or a video: streamed, checked, queued to build",
                "description": "Limits: photos (JPEG, PNG, WebP) up to 20 MiB and 40 megapixels; videos (MP4, "
                "MOV, WebM, MKV, AVI) up to 200 MiB, 4K frames, 3-300 s; exactly one face. 256 MiB must stay "
                "free on the library's disk.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "name": {"type": "string", "maxLength": 80},
                                    "voice": {
                                        "type": "string",
                                        "description": "a voice id (GET /api/voices)",
                                    },
                                    "file": {"type": "string", "format": "binary"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "queued: the avatar's future id and the build job",
                        **_json(
                            {
                                "type": "object",
                                "required": ["id", "job"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "job": {"type": "string"},
                                    "status": {"type": "string"},
                                    "events": {"type": "string"},
                                    "position": {"type": "integer"},
                                },
                            }
                        ),
                    },
                    **_errors(400, 401, 403, 413, 415, 422, 429, 503),
                },
            },
        },
        "/api/avatars/{id}": {
            "get": {
                "summary": "one avatar",
                "parameters": [_AVATAR_ID],
                "responses": {"200": {"description": "avatar", **_json(avatar)}, **_errors(401, 403, 404)},
            },
            "delete": {
                "summary": "delete an avatar (refused while a session uses it; the bundled one never)",
                "parameters": [_AVATAR_ID],
                "responses": {
                    "200": {"description": "deleted", **_json({"type": "object"})},
                    **_errors(401, 403, 404, 409),
                },
            },
        },
        "/api/avatars/{id}/preview.png": {
            "get": {
                "summary": "the avatar's preview picture",
                "parameters": [_AVATAR_ID],
                "responses": {
                    "200": {"description": "PNG", "content": {"image/png": {}}},
                    **_errors(401, 403, 404),
                },
            }
        },
        "/api/avatars/jobs/{job}": {
            "get": {
                "summary": "a build's state, stage, progress, queue position and failure reason",
                "parameters": [_JOB_ID],
                "responses": {"200": {"description": "job", **_json(job)}, **_errors(401, 403, 404)},
            }
        },
        "/api/avatars/jobs/{job}/events": {
            "get": {
                "summary": "websocket: the build job object each time it changes, until it ends",
                "parameters": [
                    _JOB_ID,
                    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "responses": {"101": {"description": "websocket upgrade"}, **_errors(401, 403, 404)},
            }
        },
        "/api/voices": {
            "get": {
                "summary": "the Piper voices this server speaks with (the default first)",
                "responses": {
                    "200": {
                        "description": "list",
                        **_json({"type": "array", "items": {"$ref": "#/components/schemas/Voice"}}),
                    },
                    **_errors(401, 403),
                },
            }
        },
    }
