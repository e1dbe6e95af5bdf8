"""An offline Modal service that the real, unmodified modal client talks to over gRPC on loopback.

Modal tests its own client this way (modal-labs/modal-client, test/conftest.py: an in-process servicer); this one
is written for this project and answers the RPCs its commands make, as the server of modal 1.6.4 does as far as
the client's source shows. Start it with `ModalService(root)`, point a client at it with `service.env()`
(MODAL_SERVER_URL and a token), and script what happens to each function's calls.

What it models:
- Apps: `modal run` (ephemeral), `modal run --detach` (detached), `modal deploy` (deployed, looked up by name with
  `Function.from_name` / `Cls.from_name`). An ephemeral app stops when its client disconnects or stops sending
  heartbeats (`heartbeat_timeout_s`), and its running calls are terminated; detached and deployed apps keep
  running without a client.
- Calls: `spawn` (async: the server retries), `remote` (sync: the client sends FunctionRetryInputs), `with_options`
  (a bound variant with its own GPU, timeout, retries and max_containers pool), `FunctionCall.from_id`/`get`. A
  poll is held up to the timeout it asks for and answered empty while the call runs (the client then raises the
  builtin TimeoutError), with the output when there is one, and empty with no unfinished input when the result
  has expired (OutputExpiredError).
- Each attempt runs as a container would run it: a fresh process (tests/modal_container.py) that imports the app
  module from its file by name and calls the function's raw body, never a pickled function, with the image's
  environment and each volume mount redirected to a folder of its own. The function's timeout kills an attempt
  (status TIMEOUT); a crash is a FAILURE carrying the remote exception; retries follow the function's policy.
- Scripting (`script(function, *Attempt)`): hold an attempt "running" before it starts, preempt it (SIGTERM, then
  a new attempt on the same input that does not count against retries), or make it time out; `expire(call_id)`
  drops a result.
- Volumes: a container sees the state committed when it started; `commit()` publishes its changes, path by path
  (the last writer wins) and then reloads; `reload()` fails while a process of the container holds a file of the
  volume open, with Modal's message; a container that returns commits on exit, one that is killed does not. The
  laptop reads committed state with listdir/iterdir/read_file.

What it does not model: image builds (every image is "built" at once), logs streaming, background commits
during a run (a conservative choice: only explicit commits and a clean exit publish), GPUs (a container runs on
this machine's CPU), web endpoints' URLs beyond a placeholder, and the real server's undocumented timings.
"""

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpclib.server
from aiohttp import web
from google.protobuf import empty_pb2
from grpclib import GRPCError, Status
from modal._serialization import serialize
from modal._utils.blob_utils import BLOCK_SIZE
from modal_proto import api_grpc, api_pb2

CONTAINER = Path(__file__).with_name("modal_container.py")
# How long our client lets each poll for a result be held in the tests (55 s on Modal): a call is seen running
# across several polls.
CLIENT_POLL_S = 0.5
CONTAINER_HEADER = "x-offline-task-id"  # set by each container's client (MODAL_OVERRIDE_HEADERS)
OPEN_FILES_MESSAGE = "there are open files preventing the operation"
RESULT = api_pb2.GenericResult
FUNCTION_DATA_FIELDS = ("webhook_config", "class_parameter_info", "autoscaler_settings", "schedule")
FUNCTION_DATA_SCALARS = (
    "module_name", "function_name", "function_type", "is_class", "is_method", "timeout_secs",
    "method_definitions_set", "web_url", "implementation_name", "is_server",
)  # fmt: skip


@dataclass
class Attempt:
    """What happens to one attempt of a call: held `hold_s` before its container starts; preempted `preempt_after_s`
    after it starts, or once `preempt_when_committed` ("volume/path") is committed (SIGTERM, then a fresh attempt);
    `timeout` makes it run past its function's timeout; `exception` fails it with that remote exception."""

    hold_s: float = 0.0
    preempt_after_s: float | None = None
    preempt_when_committed: str | None = None  # a glob on a volume, "volume-name/pattern"
    timeout: bool = False
    exception: str | None = None  # the attempt fails at once with RuntimeError(exception), no container


@dataclass
class FunctionDef:
    function_id: str
    app_id: str
    tag: str
    definition: api_pb2.Function
    options: api_pb2.FunctionOptions = field(default_factory=api_pb2.FunctionOptions)
    base_id: str | None = None  # set on a with_options variant: the function it varies
    data: api_pb2.FunctionData | None = None  # as created, for lookups by name
    running: int = 0
    waiting: list = field(default_factory=list)  # asyncio futures queued behind max_containers

    def option(self, name: str):
        return getattr(self.options, name) if self.options.HasField(name) else getattr(self.definition, name)

    @property
    def max_containers(self) -> int | None:
        """The variant's own limit, else its definition's; 0 means none (as the client sends an unset one)."""
        if self.options.HasField("concurrency_limit"):
            return self.options.concurrency_limit or None
        return self.definition.concurrency_limit or self.definition.autoscaler_settings.max_containers or None

    @property
    def volume_mounts(self):
        if self.options.replace_volume_mounts:
            return list(self.options.volume_mounts)
        return list(self.definition.volume_mounts)


@dataclass
class Call:
    call_id: str
    function: FunctionDef
    args: bytes
    data_format: int
    invocation_type: int
    input_id: str
    attempts: int = 0
    preemptions: int = 0
    output: api_pb2.GenericResult | None = None
    expired: bool = False
    task: asyncio.Task | None = None
    container: "Container | None" = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    history: list = field(default_factory=list)  # (attempt, outcome)


@dataclass
class Container:
    task_id: str
    folder: Path
    mounts: dict  # mount path -> (volume name, view folder)
    process: subprocess.Popen | None = None
    base: dict = field(default_factory=dict)  # volume name -> {path: stamp} when the view was taken
    preempt_when_committed: str | None = None
    preempted: asyncio.Event = field(default_factory=asyncio.Event)


class ModalService(api_grpc.ModalClientBase):
    def __init__(self, root: Path, app_dirs: list[Path] = (), heartbeat_timeout_s: float = 30.0):
        self.root = Path(root)
        self.app_dirs = [str(d) for d in app_dirs]  # where containers import app modules (the image's /root)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.token = ("ak-offline", "as-offline")
        self._ids = itertools.count(1)
        self.apps: dict[str, dict] = {}
        self.deployed: dict[str, str] = {}  # app name -> app id
        self.functions: dict[str, FunctionDef] = {}
        self.classes: dict[str, dict] = {}
        self.images: dict[str, api_pb2.Image] = {}
        self.secrets: dict[str, dict[str, str]] = {}  # secret id -> its variables (`env=` of a function)
        self.calls: dict[str, Call] = {}
        self.scripts: dict[str, list[Attempt]] = {}
        self.requests: list[str] = []  # every RPC's name, in order
        self.unanswered: list[str] = []  # RPCs this service does not model
        self.polls: list[float] = []  # each FunctionGetOutputs' timeout: how long the client let it be held
        self.faults: list[str] = []  # errors of this service itself (a test should find none)
        self.containers: list[Container] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> "ModalService":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the offline Modal service did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start():
            self._server = grpclib.server.Server([self])
            await self._server.start("127.0.0.1", 0)
            self.port = self._server._server.sockets[0].getsockname()[1]
            blobs = web.Application()
            blobs.router.add_get("/volume/{volume}/{path:.*}", self._serve_file)
            self._blob_runner = web.AppRunner(blobs)
            await self._blob_runner.setup()
            site = web.TCPSite(self._blob_runner, "127.0.0.1", 0)
            await site.start()
            self.blob_port = site._server.sockets[0].getsockname()[1]
            self._watchdog = asyncio.create_task(self._watch_heartbeats())

        self._loop.run_until_complete(start())
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def stop():
            self._watchdog.cancel()
            for call in self.calls.values():
                if call.task and not call.task.done():
                    call.task.cancel()
            for container in self.containers:
                _kill(container.process)
            self._server.close()
            await self._blob_runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def env(self) -> dict[str, str]:
        """What a client needs to talk to this service (as `modal token new` and MODAL_SERVER_URL would give)."""
        return {
            "MODAL_SERVER_URL": f"http://127.0.0.1:{self.port}",
            "MODAL_TOKEN_ID": self.token[0],
            "MODAL_TOKEN_SECRET": self.token[1],
        }

    def _run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    # -- scripting and inspection (from the test's thread) ----------------------------------------------------

    def script(self, function: str, *attempts: Attempt) -> None:
        """The next calls' attempts of `function` (by its tag), in order; unscripted attempts just run."""
        self.scripts.setdefault(function, []).extend(attempts)

    def expire(self, call_id: str) -> None:
        async def expire():
            call = self.calls[call_id]
            call.expired, call.output = True, None
            call.done.set()

        self._run(expire())

    def calls_of(self, function: str) -> list[Call]:
        return [c for c in self.calls.values() if c.function.tag == function]

    def wait_running(self, function: str, count: int = 1, timeout: float = 120) -> list[Call]:
        """Blocks until `count` calls of `function` have a container running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            running = [c for c in self.calls_of(function) if c.container and c.container.process
                       and c.container.process.poll() is None]  # fmt: skip
            if len(running) >= count:
                return running
            time.sleep(0.05)
        raise TimeoutError(f"{count} running call(s) of {function} not seen in {timeout} s")

    def volume_path(self, name: str) -> Path:
        """The committed state of volume `name`."""
        path = self.root / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def app_state(self, app_id: str) -> str:
        return self.apps[app_id]["state"]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-offline{next(self._ids)}"

    # -- clients and apps -------------------------------------------------------------------------------------

    async def recv(self, stream):
        request = await stream.recv_message()
        name = type(request).__name__.removesuffix("Request")
        self.requests.append(name)
        return request

    async def ClientHello(self, stream):
        await self.recv(stream)
        metadata = stream.metadata
        is_container = metadata.get("x-modal-client-type") == str(api_pb2.CLIENT_TYPE_CONTAINER)
        if (
            not is_container
            and (metadata.get("x-modal-token-id"), metadata.get("x-modal-token-secret")) != self.token
        ):
            raise GRPCError(Status.UNAUTHENTICATED, "Token missing or invalid")
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def EnvironmentGetOrCreate(self, stream):
        await self.recv(stream)
        await stream.send_message(
            api_pb2.EnvironmentGetOrCreateResponse(
                environment_id="en-offline",
                metadata=api_pb2.EnvironmentMetadata(
                    name="main", settings=api_pb2.EnvironmentSettings(image_builder_version="2025.06")
                ),
            )
        )

    async def AppCreate(self, stream):
        request = await self.recv(stream)
        app_id = self._new_id("ap")
        states = {api_pb2.APP_STATE_DETACHED: "detached", api_pb2.APP_STATE_EPHEMERAL: "ephemeral"}
        state = states.get(request.app_state, "deploying")  # `modal deploy` creates its app INITIALIZING
        self.apps[app_id] = {"state": state, "description": request.description, "heartbeat": time.time()}
        await stream.send_message(
            api_pb2.AppCreateResponse(app_id=app_id, app_page_url=f"offline://{app_id}")
        )

    async def AppGetByDeploymentName(self, stream):
        request = await self.recv(stream)  # `modal deploy` looks up the deployment it replaces ("" if none)
        await stream.send_message(
            api_pb2.AppGetByDeploymentNameResponse(app_id=self.deployed.get(request.name, ""))
        )

    async def AppGetOrCreate(self, stream):
        request = await self.recv(stream)
        app_id = self.deployed.get(request.app_name)
        if app_id is None:
            app_id = self._new_id("ap")
            self.apps[app_id] = {"state": "deploying", "name": request.app_name, "heartbeat": time.time()}
        await stream.send_message(api_pb2.AppGetOrCreateResponse(app_id=app_id))

    def _layout(self, app_id: str) -> api_pb2.AppLayout:
        """The app's objects and their handles, as a container is given them."""
        app = self.apps[app_id]
        function_ids, class_ids = app.get("function_ids", {}), app.get("class_ids", {})
        objects = [
            api_pb2.Object(object_id=fid, function_handle_metadata=self._handle(self.functions[fid]))
            for fid in function_ids.values()
        ]
        objects += [
            api_pb2.Object(object_id=cid, class_handle_metadata=api_pb2.ClassHandleMetadata())
            for cid in class_ids.values()
        ]
        return api_pb2.AppLayout(objects=objects, function_ids=function_ids, class_ids=class_ids)

    async def AppGetLayout(self, stream):
        request = await self.recv(stream)
        await stream.send_message(api_pb2.AppGetLayoutResponse(app_layout=self._layout(request.app_id)))

    async def AppHeartbeat(self, stream):
        request = await self.recv(stream)
        self.apps[request.app_id]["heartbeat"] = time.time()
        await stream.send_message(empty_pb2.Empty())

    async def AppGetLogs(self, stream):
        request = await self.recv(
            stream
        )  # no logs are streamed: hold the poll, then say whether the client is done
        await asyncio.sleep(min(request.timeout or 1, 0.5))
        done = self.apps[request.app_id].get("client_gone", False)
        await stream.send_message(api_pb2.TaskLogsBatch(entry_id="0", app_done=done))

    async def AppPublish(self, stream):
        request = await self.recv(stream)
        app = self.apps[request.app_id]
        app["function_ids"], app["class_ids"] = dict(request.function_ids), dict(request.class_ids)
        if request.app_state == api_pb2.APP_STATE_DEPLOYED:
            app.update(state="deployed", name=request.name)
            self.deployed[request.name] = request.app_id
        await stream.send_message(api_pb2.AppPublishResponse(url=f"offline://{request.app_id}"))

    async def AppClientDisconnect(self, stream):
        request = await self.recv(stream)
        await self._client_gone(request.app_id)
        await stream.send_message(empty_pb2.Empty())

    async def _client_gone(self, app_id: str) -> None:
        """An ephemeral app ends with its client; detached and deployed apps go on."""
        app = self.apps[app_id]
        app["client_gone"] = True
        if app["state"] != "ephemeral":
            return
        app["state"] = "stopped"
        for call in list(self.calls.values()):
            if call.function.app_id == app_id and not call.done.is_set():
                await self._terminate(call, "the app stopped: its client disconnected")

    async def _watch_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for app_id, app in list(self.apps.items()):
                if app["state"] == "ephemeral" and time.time() - app["heartbeat"] > self.heartbeat_timeout_s:
                    await self._client_gone(app_id)

    async def AppStop(self, stream):
        request = await self.recv(stream)
        self.apps[request.app_id]["state"] = "ephemeral"
        await self._client_gone(request.app_id)
        await stream.send_message(empty_pb2.Empty())

    # -- objects the client creates ---------------------------------------------------------------------------

    async def ImageGetOrCreate(self, stream):
        request = await self.recv(stream)
        image_id = "im-" + hashlib.sha256(request.image.SerializeToString()).hexdigest()[:16]
        self.images[image_id] = request.image
        done = RESULT(status=RESULT.GENERIC_STATUS_SUCCESS)
        metadata = api_pb2.ImageMetadata(
            python_version_info=sys.version, image_builder_version=request.builder_version
        )
        await stream.send_message(
            api_pb2.ImageGetOrCreateResponse(image_id=image_id, result=done, metadata=metadata)
        )

    async def SecretGetOrCreate(self, stream):
        request = await self.recv(stream)  # `env={...}` of a function arrives as an anonymous secret
        secret_id = self._new_id("st")
        self.secrets[secret_id] = dict(request.env_dict)
        await stream.send_message(api_pb2.SecretGetOrCreateResponse(secret_id=secret_id))

    async def MountGetOrCreate(self, stream):
        await self.recv(
            stream
        )  # the app's source ships with the mount; a container imports it from this checkout
        await stream.send_message(
            api_pb2.MountGetOrCreateResponse(
                mount_id=self._new_id("mo"),
                handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex="0"),
            )
        )

    async def MountPutFile(self, stream):
        await self.recv(stream)
        await stream.send_message(api_pb2.MountPutFileResponse(exists=True))

    async def MountBatchedCheckExistence(self, stream):
        await self.recv(stream)
        await stream.send_message(api_pb2.MountBatchedCheckExistenceResponse())

    async def VolumeGetOrCreate(self, stream):
        request = await self.recv(stream)
        name = request.deployment_name
        creating = request.object_creation_type in (
            api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING, api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS
        )  # fmt: skip
        if not creating and not (self.root / "volumes" / name).is_dir():
            raise GRPCError(Status.NOT_FOUND, f"Volume '{name}' not found in environment 'main'")
        volume_id = (
            "vo-" + name.encode().hex()
        )  # stable per name, as on Modal: a client may keep an id it had
        self.volume_path(name)
        await stream.send_message(
            api_pb2.VolumeGetOrCreateResponse(
                volume_id=volume_id,
                version=api_pb2.VOLUME_FS_VERSION_V1,
                metadata=api_pb2.VolumeMetadata(name=name, version=api_pb2.VOLUME_FS_VERSION_V1),
            )  # the client takes the volume's name from the metadata
        )

    def _handle(self, function: FunctionDef) -> api_pb2.FunctionHandleMetadata:
        definition = function.definition
        return api_pb2.FunctionHandleMetadata(
            function_name=definition.function_name,
            function_type=definition.function_type,
            web_url=f"http://offline.invalid/{definition.function_name}"
            if definition.HasField("webhook_config") and definition.webhook_config.type
            else "",
            is_method=definition.is_method,
            use_method_name=definition.function_name.split(".")[-1] if definition.is_method else "",
            definition_id="de-" + function.function_id,
            max_object_size_bytes=2 * 1024 * 1024,
            supported_input_formats=[api_pb2.DATA_FORMAT_PICKLE],
            supported_output_formats=[api_pb2.DATA_FORMAT_PICKLE],
            app_id=function.app_id,
        )

    async def FunctionPrecreate(self, stream):
        request = await self.recv(stream)
        function_id = request.existing_function_id or self._new_id("fu")
        await stream.send_message(api_pb2.FunctionPrecreateResponse(function_id=function_id))

    async def FunctionCreate(self, stream):
        request = await self.recv(stream)
        if request.HasField(
            "function_data"
        ):  # several GPU types: one definition per rank, the first tried first
            data, definition = request.function_data, request.function_data.ranked_functions[0].function
        else:
            definition = request.function
            data = api_pb2.FunctionData(
                **{f: getattr(definition, f) for f in FUNCTION_DATA_FIELDS if definition.HasField(f)},
                **{f: getattr(definition, f) for f in FUNCTION_DATA_SCALARS},
            )
            data.supported_input_formats.extend(definition.supported_input_formats)
            data.supported_output_formats.extend(definition.supported_output_formats)
            for method, method_definition in definition.method_definitions.items():  # a class's methods
                data.method_definitions[method].CopyFrom(method_definition)
            data.ranked_functions.append(api_pb2.FunctionData.RankedFunction(rank=0, function=definition))
        function_id = request.existing_function_id or self._new_id("fu")
        function = FunctionDef(function_id, request.app_id, definition.function_name, definition, data=data)
        self.functions[function_id] = function
        await stream.send_message(
            api_pb2.FunctionCreateResponse(
                function_id=function_id, function_data=data, handle_metadata=self._handle(function)
            )
        )

    async def ClassCreate(self, stream):
        request = await self.recv(stream)
        class_id = request.existing_class_id or self._new_id("cs")
        self.classes[class_id] = {"app_id": request.app_id}
        await stream.send_message(api_pb2.ClassCreateResponse(class_id=class_id))

    async def FunctionBindParams(self, stream):
        request = await self.recv(stream)
        base = self.functions[request.function_id]
        options = api_pb2.FunctionOptions()
        options.CopyFrom(base.options)
        options.MergeFrom(request.function_options)
        bound = FunctionDef(
            self._new_id("fu"), base.app_id, base.tag, base.definition, options, base.function_id
        )
        self.functions[bound.function_id] = bound
        await stream.send_message(
            api_pb2.FunctionBindParamsResponse(
                bound_function_id=bound.function_id, handle_metadata=self._handle(bound)
            )
        )

    async def FunctionGet(self, stream):
        request = await self.recv(stream)
        app_id = self.deployed.get(request.app_name)
        function_id = app_id and self.apps[app_id]["function_ids"].get(request.object_tag)
        if not function_id:
            raise GRPCError(Status.NOT_FOUND, f"Lookup failed for Function '{request.object_tag}' from the "
                            f"'{request.app_name}' app: app not found or not deployed")  # fmt: skip
        function = self.functions[function_id]
        await stream.send_message(
            api_pb2.FunctionGetResponse(
                function_id=function_id, handle_metadata=self._handle(function), function=function.data
            )
        )

    # -- calls ------------------------------------------------------------------------------------------------

    async def FunctionMap(self, stream):
        request = await self.recv(stream)
        function = self.functions[request.function_id]
        if self.apps[function.app_id]["state"] == "stopped":
            raise GRPCError(Status.FAILED_PRECONDITION, "App is stopped")
        call_id = self._new_id("fc")
        items = []
        for index, item in enumerate(request.pipelined_inputs):
            call = Call(call_id, function, item.input.args, item.input.data_format,
                        request.function_call_invocation_type, self._new_id("in"))  # fmt: skip
            self.calls[call_id] = call
            call.task = asyncio.create_task(self._execute(call))
            items.append(
                api_pb2.FunctionPutInputsResponseItem(idx=index, input_id=call.input_id, input_jwt=call_id)
            )
        retries = function.option("retry_policy")
        await stream.send_message(
            api_pb2.FunctionMapResponse(
                function_call_id=call_id,
                pipelined_inputs=items,
                retry_policy=retries,
                function_call_jwt=call_id,
                sync_client_retries_enabled=True,
            )
        )

    async def FunctionRetryInputs(self, stream):
        request = await self.recv(stream)
        for item in request.inputs:
            call = self.calls[item.input_jwt]
            call.output, call.done = None, asyncio.Event()
            call.task = asyncio.create_task(self._execute(call))
        await stream.send_message(
            api_pb2.FunctionRetryInputsResponse(input_jwts=[i.input_jwt for i in request.inputs])
        )

    async def FunctionCallFromId(self, stream):
        request = await self.recv(stream)
        call = self.calls.get(request.function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call {request.function_call_id} not found")
        await stream.send_message(
            api_pb2.FunctionCallFromIdResponse(
                function_call_id=call.call_id,
                num_inputs=1,
                metadata=api_pb2.FunctionCallHandleMetadata(
                    app_id=call.function.app_id, function_id=call.function.function_id
                ),
            )
        )

    async def FunctionGetOutputs(self, stream):
        request = await self.recv(stream)
        self.polls.append(request.timeout)
        call = self.calls[request.function_call_id]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(call.done.wait(), timeout=max(request.timeout, 0))
        if call.output is None:  # running (or expired: nothing unfinished either)
            unfinished = 0 if call.expired else 1
            await stream.send_message(api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=unfinished))
            return
        item = api_pb2.FunctionGetOutputsItem(
            result=call.output, idx=0, input_id=call.input_id, data_format=api_pb2.DATA_FORMAT_PICKLE,
            retry_count=call.attempts - 1,
        )  # fmt: skip
        await stream.send_message(api_pb2.FunctionGetOutputsResponse(outputs=[item], num_unfinished_inputs=0))

    async def FunctionCallCancel(self, stream):
        request = await self.recv(stream)
        call = self.calls[request.function_call_id]
        await self._terminate(call, "cancelled")
        await stream.send_message(empty_pb2.Empty())

    async def _terminate(self, call: Call, why: str) -> None:
        if call.task and not call.task.done():
            call.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call.task
        if call.container:
            _kill(call.container.process)
        call.history.append((call.attempts, "terminated"))
        call.output = RESULT(status=RESULT.GENERIC_STATUS_TERMINATED, exception=why)
        call.done.set()

    async def _execute(self, call: Call) -> None:
        try:
            await self._attempts(call)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a fault of this service: loud, and the call ends
            self.faults.append(repr(err))
            call.output = RESULT(
                status=RESULT.GENERIC_STATUS_INTERNAL_FAILURE, exception=f"offline service: {err!r}"
            )
            call.done.set()
            raise

    async def _attempts(self, call: Call) -> None:
        """Attempts of one input until one ends for good, as the server schedules them."""
        function = call.function
        policy = function.option("retry_policy")
        server_retries = (
            0 if call.invocation_type == api_pb2.FUNCTION_CALL_INVOCATION_TYPE_SYNC else policy.retries
        )
        delay = policy.initial_delay_ms / 1000
        failures = 0
        while True:
            call.attempts += 1
            plan = self.scripts.get(function.tag, [])
            attempt = plan.pop(0) if plan else Attempt()
            outcome, result = await self._attempt(call, attempt)
            call.history.append((call.attempts, outcome))
            if outcome == "preempted":
                call.preemptions += 1
                continue
            if outcome == "success" or failures >= server_retries:
                if not call.expired:
                    call.output = result
                call.done.set()
                return
            failures += 1
            await asyncio.sleep(max(delay, 1.0) if delay else 0)  # Modal raises delays under 1 s to 1 s
            delay = min(delay * (policy.backoff_coefficient or 1), 60)

    async def _attempt(self, call: Call, attempt: Attempt) -> tuple[str, api_pb2.GenericResult]:
        function = call.function
        if attempt.hold_s:
            await asyncio.sleep(attempt.hold_s)
        if attempt.exception is not None:
            error = serialize(RuntimeError(attempt.exception))
            return "failure", RESULT(
                status=RESULT.GENERIC_STATUS_FAILURE, data=error, exception=attempt.exception
            )
        limit = function.max_containers
        while (
            limit is not None and function.running >= limit
        ):  # each with_options variant is a pool of its own
            waiter = self._loop.create_future()
            function.waiting.append(waiter)
            await waiter
        function.running += 1
        container = self._new_container(call)
        container.preempt_when_committed = attempt.preempt_when_committed
        call.container = container
        try:
            process = container.process
            timeout = 0.5 if attempt.timeout else function.option("timeout_secs") or None
            wait = asyncio.create_task(asyncio.to_thread(process.wait))
            preempt = asyncio.create_task(self._preemption(attempt, container))
            done, _ = await asyncio.wait(
                {wait, preempt}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            preempt.cancel()
            if wait not in done:
                # Modal stops a container with SIGTERM and kills it after a grace period.
                _signal(process, signal.SIGTERM)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(wait), timeout=30)
                _kill(process)
                await wait
            if preempt in done or container.preempted.is_set():
                return "preempted", None
            if wait not in done:
                return "timeout", RESULT(
                    status=RESULT.GENERIC_STATUS_TIMEOUT,
                    exception=f"Function '{function.tag}' timed out after {function.option('timeout_secs')} s",
                )
            return self._collect(container)
        finally:
            function.running -= 1
            while function.waiting:
                waiter = function.waiting.pop(0)
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def _preemption(self, attempt: Attempt, container: Container) -> None:
        """Returns when the attempt is to be preempted; never, for most."""
        if attempt.preempt_after_s is not None:
            await asyncio.sleep(attempt.preempt_after_s)
        else:
            await container.preempted.wait()  # set by the commit that publishes preempt_when_committed

    def _new_container(self, call: Call) -> Container:
        task_id = self._new_id("ta")
        folder = self.root / "containers" / task_id
        folder.mkdir(parents=True)
        container = Container(task_id, folder, {})
        env = dict(os.environ)
        for key in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
            env.pop(key, None)  # ignored in containers, with a warning
        for mount in call.function.volume_mounts:
            name = _volume_name(mount.volume_id)
            view = folder / "volumes" / mount.mount_path.strip("/")
            container.base[name] = _snapshot_into(self.volume_path(name), view)
            container.mounts[mount.mount_path] = (name, view)
        image = self.images.get(call.function.definition.image_id)
        for secret_id in call.function.definition.secret_ids:  # set in the container, as the image's ENV is
            env.update(self.secrets.get(secret_id, {}))
        for key, value in _image_env(image).items():
            for mount_path, (_, view) in container.mounts.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    value = str(view) + value[len(mount_path) :]
            env[key] = value
        (folder / "input.pickle").write_bytes(call.args)
        (folder / "layout.bin").write_bytes(self._layout(call.function.app_id).SerializeToString())
        spec = {
            "module": call.function.definition.module_name,
            "function": call.function.tag,
            "call_id": call.call_id,
            "input_id": call.input_id,
            "input": str(folder / "input.pickle"),
            "output": str(folder / "output.pickle"),
            "layout": str(folder / "layout.bin"),
            "app_id": call.function.app_id,
        }
        env.update(
            MODAL_IS_REMOTE="1",
            MODAL_SERVER_URL=f"http://127.0.0.1:{self.port}",
            MODAL_TASK_ID=task_id,
            MODAL_OVERRIDE_HEADERS=f"{CONTAINER_HEADER}:{task_id}",
            OFFLINE_CONTAINER=json.dumps(spec),
            PYTHONPATH=os.pathsep.join([*self.app_dirs, env.get("PYTHONPATH", "")]),
        )
        with open(folder / "log.txt", "wb") as log:
            container.process = subprocess.Popen(
                [sys.executable, str(CONTAINER)], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=folder,
            )  # fmt: skip
        self.containers.append(container)
        return container

    def _collect(self, container: Container) -> tuple[str, api_pb2.GenericResult]:
        output = container.folder / "output.pickle"
        log = (container.folder / "log.txt").read_text(errors="replace")
        if not output.exists():  # killed, or died outside the function body
            return "crashed", RESULT(
                status=RESULT.GENERIC_STATUS_FAILURE,
                exception=f"container exited with code {container.process.returncode}",
                traceback=log[-4000:],
            )
        ok, data = pickle.loads(output.read_bytes())
        self._commit(container)  # a container that returns commits its volumes on exit
        if ok:
            return "success", RESULT(status=RESULT.GENERIC_STATUS_SUCCESS, data=data)
        return "failure", RESULT(status=RESULT.GENERIC_STATUS_FAILURE, data=data, exception=log[-500:])

    # -- volumes ----------------------------------------------------------------------------------------------

    def _container_of(self, stream) -> Container:
        task_id = stream.metadata.get(CONTAINER_HEADER)
        for container in self.containers:
            if container.task_id == task_id:
                return container
        raise GRPCError(Status.FAILED_PRECONDITION, "commit() and reload() can only be called in a container")

    def _mount_of(self, container: Container, volume_id: str):
        name = _volume_name(volume_id)
        for volume_name, view in container.mounts.values():
            if volume_name == name:
                return name, view
        raise GRPCError(Status.FAILED_PRECONDITION, f"volume {name} is not mounted in this container")

    def _commit(self, container: Container, only: str | None = None) -> None:
        for name, view in container.mounts.values():
            if only and name != only:
                continue
            committed, base = self.volume_path(name), container.base[name]
            now = _stamps(view)
            for path, stamp in now.items():
                if base.get(path) != stamp:  # written in this container since its view was taken
                    target = committed / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(view / path, target)
            for path in set(base) - set(now):
                (committed / path).unlink(missing_ok=True)
            container.base[name] = now

    def _reload(self, container: Container, name: str, view: Path) -> None:
        open_files = _open_files(container.process.pid, view)
        if open_files:
            raise GRPCError(Status.FAILED_PRECONDITION, f"{OPEN_FILES_MESSAGE}: {sorted(open_files)[0]}")
        self._commit(container, name)  # uncommitted changes are committed by a reload
        container.base[name] = _snapshot_into(self.volume_path(name), view)

    async def VolumeCommit(self, stream):
        request = await self.recv(stream)
        container = self._container_of(stream)
        name, _ = self._mount_of(container, request.volume_id)
        self._commit(container, name)
        if pattern := container.preempt_when_committed:
            volume, _, glob = pattern.partition("/")
            if volume == name and any(self.volume_path(volume).glob(glob)):
                # Preempted right after this commit, before the container hears back: deterministic for tests.
                container.preempted.set()
                _signal(container.process, signal.SIGTERM)
        await stream.send_message(api_pb2.VolumeCommitResponse(skip_reload=False))

    async def VolumeReload(self, stream):
        request = await self.recv(stream)
        container = self._container_of(stream)
        name, view = self._mount_of(container, request.volume_id)
        self._reload(container, name, view)
        await stream.send_message(empty_pb2.Empty())

    async def VolumeListFiles(self, stream):
        request = await self.recv(stream)
        root = self.volume_path(_volume_name(request.volume_id))
        base = root / request.path.strip("/")
        if not base.exists():
            raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {request.path}")
        paths = [base] if base.is_file() else sorted(base.rglob("*") if request.recursive else base.iterdir())
        entries = []
        for path in paths:
            stat = path.stat()
            kind = api_pb2.FileEntry.FileType.DIRECTORY if path.is_dir() else api_pb2.FileEntry.FileType.FILE
            entries.append(api_pb2.FileEntry(path=str(path.relative_to(root)), type=kind,
                                             mtime=int(stat.st_mtime), size=stat.st_size))  # fmt: skip
        await stream.send_message(api_pb2.VolumeListFilesResponse(entries=entries))

    async def VolumeGetFile2(self, stream):
        request = await self.recv(stream)
        name = _volume_name(request.volume_id)
        path = self.volume_path(name) / request.path.strip("/")
        if not path.is_file():
            raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}")
        size = path.stat().st_size
        url = f"http://127.0.0.1:{self.blob_port}/volume/{name}/{request.path.strip('/')}"
        blocks = -(-size // BLOCK_SIZE)  # one URL per block, as the client reads them
        await stream.send_message(
            api_pb2.VolumeGetFile2Response(
                get_urls=[f"{url}?block={i}" for i in range(blocks)], size=size, start=0, len=size
            )
        )

    async def _serve_file(self, request: web.Request) -> web.Response:
        path = self.volume_path(request.match_info["volume"]) / request.match_info["path"]
        start = int(request.query.get("block", 0)) * BLOCK_SIZE
        with open(path, "rb") as file:
            file.seek(start)
            return web.Response(body=file.read(BLOCK_SIZE))


def _volume_name(volume_id: str) -> str:
    return bytes.fromhex(volume_id.removeprefix("vo-")).decode()


def _image_env(image: api_pb2.Image | None) -> dict[str, str]:
    env = {}
    for command in image.dockerfile_commands if image else ():
        if command.startswith("ENV "):
            for part in command[4:].split():
                key, _, value = part.partition("=")
                env[key] = value.strip('"')
    return env


def _stamps(folder: Path) -> dict[str, tuple]:
    stamps = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            stamps[str(path.relative_to(folder))] = (stat.st_mtime_ns, stat.st_size)
    return stamps


def _snapshot_into(committed: Path, view: Path) -> dict:
    """The view as committed now; returns the stamps it starts from."""
    if view.exists():
        shutil.rmtree(view)
    shutil.copytree(committed, view)
    return _stamps(view)


def _open_files(pid: int, folder: Path) -> set[str]:
    """Files under `folder` held open by `pid` or any process below it."""
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{current}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{current}/fd/{fd}")
                    if target.startswith(str(folder) + "/"):
                        found.add(target)
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    pending += [int(c) for c in open(f"/proc/{current}/task/{task}/children").read().split()]
    return found


def _signal(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _kill(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        _signal(process, signal.SIGKILL)


def _unanswered(name: str):
    async def refuse(self, stream):
        self.unanswered.append(name)
        raise GRPCError(Status.UNIMPLEMENTED, f"the offline Modal service does not answer {name}")

    return refuse


# Every other RPC is refused loudly, and recorded: a test can assert that nothing unmodelled was asked.
for _name in ModalService.__abstractmethods__:
    setattr(ModalService, _name, _unanswered(_name))
ModalService.__abstractmethods__ = frozenset()


def client_process(service: ModalService, *argv: str, env: dict | None = None, timeout: float = 600):
    """`python ARGV...` as a client of `service` (MODAL_SERVER_URL and a token), in its own process group, killed
    as a group on timeout; our client's polls shortened to CLIENT_POLL_S."""
    environment = {
        **os.environ,
        **service.env(),
        "CATS_MODEL_RESULT_POLL_S": str(CLIENT_POLL_S),
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, *argv], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        _kill(process)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"{argv} still ran after {timeout} s:\n{stdout[-2000:]}\n{stderr[-3000:]}"
        ) from err
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def modal_command(service: ModalService, *args: str, **options):
    """`modal ARGS...`, the real CLI, against `service`."""
    return client_process(service, "-m", "modal", *args, **options)


def modal_in_process(service: ModalService, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`modal ARGS...` through the real CLI's own `main` (modal/__main__.py), in this process, against `service`,
    as Modal's tests run theirs: what a process of its own adds is only its start (torch and Lightning imported
    again, about 4 s of CPU). modal_command serves the tests of what only a process shows: a closed terminal, two
    clients at once, an app imported with nothing else loaded. Run in a thread, so that a client that hangs fails
    the test after `timeout` (its thread is left behind)."""
    import warnings

    import modal.__main__
    import modal.client
    from helpers import exit_status, like_a_process

    from cats_model.cloud import calls

    saved = sys.path[:], sys.excepthook, warnings.showwarning, calls.RESULT_POLL_S
    status = {}
    calls.RESULT_POLL_S = CLIENT_POLL_S
    modal.client._Client._set_env_client(None)  # a fresh client: the last one knew another service
    try:
        with own_modal_app(), like_a_process(["modal", *args], service.env()) as output:
            thread = threading.Thread(target=lambda: status.update(code=exit_status(modal.__main__.main)))
            thread.daemon = True
            thread.start()
            thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"modal {args} still ran after {timeout} s:\n{output['stderr'][-3000:]}")
    finally:
        sys.path[:], sys.excepthook, warnings.showwarning, calls.RESULT_POLL_S = saved
        modal.client._Client._set_env_client(None)
    return subprocess.CompletedProcess(["modal", *args], status.get("code", 1), **output)


@contextlib.contextmanager
def own_modal_app():
    """launch/modal_app.py loaded anew by a command run in this process, as its own process would load it; the
    module loaded before is put back afterwards. A module shared across services would keep its volumes bound to
    the first one: Modal resolves a hydrated object only once (modal/_object.py::hydrate), and an app's run
    leaves it as it is (modal/_resolver.py::load)."""
    saved = sys.modules.pop("modal_app", None)
    try:
        yield
    finally:
        sys.modules.pop("modal_app", None)
        if saved is not None:
            sys.modules["modal_app"] = saved
