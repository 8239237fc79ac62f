"""The ASGI app (Starlette): REST resources under /references, /evaluations, /canaries and
/models, plus /healthz, /readyz and /metrics. This module holds the handlers and their routes; the
rooms beside it hold the rest: configuration (config), observation (observe), limits and quotas
(limits), tokens and sign-in (auth), forms and uploads (uploads), refusals (errors).

Requests carry ``Authorization: Bearer TOKEN``; a token has the scope "read", "evaluate" (post
evaluations, and read) or "admin" (references and canaries too), and is stored hashed. Reads need a
token unless the service was started with ``public_read``; writes always need a token of their
scope in that header. Browsers sign in at /signin with a read token, kept in an HttpOnly,
SameSite=Strict cookie that grants reading only (see pages.py); the pages for people are /
(models and references) and /models/{model}. Uploads are multipart forms whose files are
statistics ``.npz`` (read without pickle) or feature ``.npy``: each is inspected once from its
headers, every check runs on that inspection, and only then are its arrays read. Every refusal is a
JSON 4xx (a 503 when busy) with ``{"error": "..."}`` naming the problem, and changes nothing in the
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from functools import partial
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fastfid._version import __version__
from fastfid.service import history, pages, uploads
from fastfid.service.auth import Access, sign_out
from fastfid.service.canaries import Alerts, run_all, run_canary
from fastfid.service.config import ServiceConfig
from fastfid.service.errors import HANDLED, Refusal, error_response
from fastfid.service.evaluation import (InputKind, ReferenceCache, Submission, agreed_space, check_against_reference,
                                         check_reference, evaluate, evaluate_spaces, jackknife_replicates,
                                         split_by_space)
from fastfid.service.limits import BodyGate, RateLimit, UploadLimit, WorkQueue, check_quota, check_work
from fastfid.service.observe import Observe, configure_logging, log
from fastfid.service.prometheus import CONTENT_TYPE, Metrics
from fastfid.service.store import NotFound, Store, jsonable, state_bytes
from fastfid.service.uploads import ONE_SPACE, Kind, TextInputs, Upload

DEFAULT_PAGE, MAX_PAGE = 100, 1000  # evaluations per page of GET /evaluations


class Handlers:
    """The handlers, over one store, one reference cache, one alerter and one set of metrics."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.store = Store(config.store, config.database_url, verify_every=config.verify_every)
        self.metrics = Metrics(self.store)
        self.cache = ReferenceCache(self.store, config.cache_size, on_lookup=self.metrics.cache_lookup)
        self.access = Access(self.store, RateLimit(config.max_requests_per_minute), config.public_read)
        self.work = WorkQueue(config.running, config.max_queue)
        self.bodies = BodyGate(config.max_bodies, config.max_bodies_per_token)
        self.quota = config.max_stored_mb * 2**20  # bytes of statistics per token
        self.alerts = Alerts(self.store, config.webhook, attempts=config.webhook_attempts,
                             backoff=config.webhook_backoff,
                             on_alert=lambda alert: self.metrics.alerts.labels(alert["kind"]).inc())

    # --- pages and sign-in --------------------------------------------------------------------------
    async def sign_in_page(self, request: Request) -> Response:
        return HTMLResponse(pages.sign_in(request.query_params.get("next", "/")))

    async def sign_in(self, request: Request) -> Response:
        return await self.access.sign_in(request, await uploads.small_form(request))

    async def sign_out(self, request: Request) -> Response:
        return sign_out()

    async def index_page(self, request: Request) -> Response:
        refusal = await self.access.page_reader(request)
        if refusal is not None:
            return refusal
        models, references = await run_in_threadpool(
            lambda: (self.store.model_summaries(), self.store.current_references()))
        return HTMLResponse(pages.index(models, references, signed_in=pages.READ_COOKIE in request.cookies))

    # --- health -------------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """Liveness, answered from the event loop: no database, no thread, so that it stays fast
        while every worker thread is busy with evaluations."""
        return JSONResponse({"status": "ok", "version": __version__,
                             "store": "sqlite" if self.store.embedded else "postgresql",
                             "cached_references": len(self.cache)})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the database answers and is intact, and the current references' statistics
        hash as recorded; 503 with the problems otherwise."""
        problems = await run_in_threadpool(self.store.readiness_problems)
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503,
                                headers={"retry-after": "30"})
        return JSONResponse({"status": "ready"})

    async def prometheus(self, request: Request) -> Response:
        # It names canaries and counts: a token of any scope, unless --public-metrics.
        await self.access.authorise(request, "read", public=self.config.public_metrics)
        return Response(await run_in_threadpool(self.metrics.render), media_type=CONTENT_TYPE)

    # --- references ---------------------------------------------------------------------------------
    async def list_references(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.current_references))

    async def get_reference(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        version = uploads.optional_int(request.query_params.get("version"), "version")
        return _json(await run_in_threadpool(self.store.reference, request.path_params["name"], version))

    async def reference_versions(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.reference_versions, request.path_params["name"]))

    async def put_reference(self, request: Request) -> Response:
        principal = await self.access.authorise(request, "admin")
        uploader = principal.name
        name = uploads.valid_name(request.path_params["name"], "reference name")
        async with uploads.read_form(request, self.bodies, principal) as form, self.work.slot():
            upload = await run_in_threadpool(self._one_upload, form)
            if upload.kind is Kind.SPACES:
                return await self._put_space_references(name, upload, uploader, form)
            declared = upload.spaces[ONE_SPACE]  # every check from the headers, then the arrays are read
            space = agreed_space(declared.feature_space,
                                 uploads.valid_label(uploads.field(form, "feature_space"), "feature_space"))
            if not space:
                raise Refusal(422, "the uploaded statistics name no feature space (files from pytorch-fid or "
                                   "clean-fid carry none): pass the feature_space field")
            await run_in_threadpool(check_quota, self.store, uploader, state_bytes(declared.dim), self.config)
            stats = await run_in_threadpool(upload.as_stats)
            await run_in_threadpool(check_reference, stats)
            record, created = await run_in_threadpool(
                lambda: self.store.add_reference(name, stats, feature_space=space, uploader=uploader,
                                                 fastfid_version=__version__, quota=self.quota))
        return _json(record, 201 if created else 200)

    async def _put_space_references(self, name: str, upload: Upload, uploader: str, form) -> Response:
        """A file of several spaces: one reference per space, named ``NAME.SPACE``, each checked and
        counted toward the quota before any is stored."""
        if uploads.field(form, "feature_space") is not None:
            raise Refusal(422, "a file of several spaces names each space's features itself: omit feature_space")
        if any(declared.feature_space is None for declared in upload.spaces.values()):
            raise Refusal(422, "every space of the file must name its feature space")
        names = {space: uploads.valid_name(f"{name}.{space}", "reference name") for space in upload.spaces}
        await run_in_threadpool(check_quota, self.store, uploader, sum(map(state_bytes, upload.dims)), self.config)
        spaces = await run_in_threadpool(upload.read_spaces)
        for stats in spaces.values():
            await run_in_threadpool(check_reference, stats)
        entries = [(names[space], stats, str(stats.feature_space)) for space, stats in spaces.items()]
        added = await run_in_threadpool(partial(self.store.add_references, entries, uploader=uploader,
                                                fastfid_version=__version__, quota=self.quota))
        return _json({"references": [record for record, _ in added]},
                     201 if any(created for _, created in added) else 200)

    def _one_upload(self, form) -> Upload:
        """The one file of a reference or canary upload (a ``stats`` .npz or a ``features`` .npy),
        inspected, its work bounded."""
        inspected = uploads.inspect_all(form, ("stats", "features"))
        if len(inspected) != 1:
            raise Refusal(422, "upload exactly one file: 'stats' (a statistics .npz) or 'features' (a .npy)")
        check_work(inspected[0].dims, inspected[0].size, self.config)
        return inspected[0]

    # --- evaluations --------------------------------------------------------------------------------
    async def post_evaluation(self, request: Request) -> Response:
        submitter = await self.access.authorise(request, "evaluate")
        async with uploads.read_form(request, self.bodies, submitter) as form, self.work.slot():
            submission = await run_in_threadpool(self._checked_submission, form,
                                                 request.headers.get("idempotency-key"))
            try:
                record, created = await run_in_threadpool(
                    evaluate_spaces if submission.per_space else evaluate, self.store, self.cache, submission,
                    submitter)
            except Refusal:
                self.metrics.evaluations.labels("refused").inc()
                raise
        self.metrics.evaluations.labels("created" if created else "replayed").inc()
        return _json(record | {"replayed": not created}, 201 if created else 200)

    def _checked_submission(self, form, key: str | None) -> Submission:
        """Every check that the uploads' declarations allow (the work they declare, the fields, each
        space's reference: read once here, with its feature space and dim), then the arrays."""
        inspected = uploads.inspect_all(form)
        check_work([dim for upload in inspected for dim in upload.dims], sum(u.size for u in inspected), self.config,
                   replicates=jackknife_replicates(inspected))
        submission = _submission(form, inspected, key)
        check_against_reference(self.store, submission)
        submission.read()
        return submission

    async def list_evaluations(self, request: Request) -> Response:
        """One page, oldest first: ``limit`` (default 100, at most 1000) after the id ``after``; a full
        page names the next in a Link header (``rel="next"``)."""
        await self.access.authorise(request, "read")
        query = request.query_params
        limit = uploads.optional_int(query.get("limit"), "limit", (1, MAX_PAGE)) or DEFAULT_PAGE
        after = uploads.optional_int(query.get("after"), "after", (0, uploads.IDS[1]))
        rows = await run_in_threadpool(lambda: self.store.evaluations(
            model=query.get("model"), reference=query.get("reference"), checkpoint=query.get("checkpoint"),
            after=after, limit=limit))
        response = _json(rows)
        if len(rows) == limit:
            following = urlencode({**query, "limit": limit, "after": rows[-1]["id"]})
            response.headers["link"] = f'</evaluations?{following}>; rel="next"'
        return response

    async def get_evaluation(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        evaluation_id = uploads.optional_int(request.path_params["id"], "evaluation id")
        assert evaluation_id is not None
        return _json(await run_in_threadpool(self.store.evaluation, evaluation_id))

    # --- history ------------------------------------------------------------------------------------
    async def model_history(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        model, reference, points = await self._points(request)
        if request.query_params.get("format", "json") == "csv":
            return PlainTextResponse(history.as_csv(points), media_type="text/csv")
        return _json({"model": model, "reference": reference, "checkpoints": points})

    async def model_page(self, request: Request) -> Response:
        refusal = await self.access.page_reader(request)
        if refusal is not None:
            return refusal
        model, reference, points = await self._points(request)
        return HTMLResponse(history.page(model, reference, points, signed_in=pages.READ_COOKIE in request.cookies))

    async def _points(self, request: Request) -> tuple[str, str, list[dict]]:
        model = request.path_params["model"]
        reference = request.query_params.get("reference")
        references = await run_in_threadpool(self.store.model_references, model)
        if not references or (reference is not None and reference not in references):
            raise NotFound(f"no evaluations of model {model!r}" + (f" against {reference!r}" if reference else ""))
        if reference is None and len(references) > 1:
            raise Refusal(400, f"model {model!r} was evaluated against {references}: name one with ?reference=")
        chosen = reference or references[0]
        # The rows stream from the database into per-checkpoint sums: memory follows the checkpoints.
        points = await run_in_threadpool(lambda: history.checkpoints(self.store.stream_history(model, chosen)))
        return model, chosen, points

    # --- canaries -----------------------------------------------------------------------------------
    async def put_canary(self, request: Request) -> Response:
        principal = await self.access.authorise(request, "admin")
        name = uploads.valid_name(request.path_params["name"], "canary name")
        async with uploads.read_form(request, self.bodies, principal) as form, self.work.slot():
            upload = await run_in_threadpool(self._one_upload, form)
            if upload.kind is Kind.SPACES:
                raise Refusal(422, "a canary holds the statistics of one space: upload that space's file")
            reference_name = uploads.required(form, "reference")
            low, high = uploads.number(form, "low"), uploads.number(form, "high")
            if not low <= high:
                raise Refusal(422, f"the band must have low ≤ high, got [{low}, {high}]")

            def create() -> dict:
                reference = self.store.reference(reference_name)
                if upload.dims[0] != reference["dim"]:
                    raise Refusal(422, f"the canary's statistics have dim {upload.dims[0]}, reference "
                                       f"{reference_name!r} has dim {reference['dim']}")
                check_quota(self.store, principal.name, state_bytes(upload.dims[0]), self.config)
                state, file_hash = self.store.put_stats(upload.as_stats())
                return self.store.put_canary(dict(
                    name=name, reference=reference_name, reference_sha256=reference["state_sha256"],
                    stats_sha256=state, stats_file_sha256=file_hash, low=low, high=high, created=time.time(),
                    uploader=principal.name), quota=self.quota, size=state_bytes(upload.dims[0]))

            record = await run_in_threadpool(create)
        return _json(record, 201)

    async def list_canaries(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.all_canaries))

    async def get_canary(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        name = request.path_params["name"]
        canary = await run_in_threadpool(self.store.canary, name)
        return _json(canary | {"alerts": await run_in_threadpool(self.store.all_alerts, name)})

    async def run_canary(self, request: Request) -> Response:
        await self.access.authorise(request, "admin")
        async with self.work.slot():
            outcome = await run_in_threadpool(run_canary, self.store, self.cache, self.alerts,
                                              request.path_params["name"])
        return _json(outcome)

    async def list_alerts(self, request: Request) -> Response:
        await self.access.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.all_alerts, request.query_params.get("canary")))

    # --- background ---------------------------------------------------------------------------------
    async def canary_loop(self, every: float) -> None:
        """Every ``every`` seconds one process of all that share the store runs every canary."""
        while True:
            try:
                if await run_in_threadpool(self.store.claim, "canaries", every):
                    await run_in_threadpool(run_all, self.store, self.cache, self.alerts)
            except Exception as error:  # the loop outlives a failed round (a database that was away)
                log.error("canary round failed", extra={"fields": {"error": str(error)}})
            await asyncio.sleep(min(every, 30.0))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index_page),
            Route("/signin", self.sign_in_page, methods=["GET"]),
            Route("/signin", self.sign_in, methods=["POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.prometheus),
            Route("/references", self.list_references),
            Route("/references/{name}", self.get_reference, methods=["GET"]),
            Route("/references/{name}", self.put_reference, methods=["PUT"]),
            Route("/references/{name}/versions", self.reference_versions),
            Route("/evaluations", self.list_evaluations, methods=["GET"]),
            Route("/evaluations", self.post_evaluation, methods=["POST"]),
            Route("/evaluations/{id}", self.get_evaluation),
            Route("/models/{model}", self.model_page),
            Route("/models/{model}/history", self.model_history),
            Route("/canaries", self.list_canaries),
            Route("/canaries/{name}", self.get_canary, methods=["GET"]),
            Route("/canaries/{name}", self.put_canary, methods=["PUT"]),
            Route("/canaries/{name}/run", self.run_canary, methods=["POST"]),
            Route("/alerts", self.list_alerts),
        ]


def create_app(config: ServiceConfig) -> Starlette:
    """The service over ``config.store`` (and ``config.database_url``, if given)."""
    configure_logging()
    handlers = Handlers(config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(handlers.canary_loop(config.canary_every)) if config.canary_every else None
        log.info("started", extra={"fields": {"store": str(config.store), "version": __version__, "pid": os.getpid()}})
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            handlers.alerts.wait(timeout=5)
            handlers.alerts.close()
            handlers.store.close()

    routes = handlers.routes()
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=dict.fromkeys(HANDLED, error_response))
    app.add_middleware(UploadLimit, limit_mb=config.max_upload_mb, idle_seconds=config.body_timeout,
                       deadline_seconds=config.body_deadline)
    app.add_middleware(TextInputs)
    app.add_middleware(Observe, metrics=handlers.metrics, routes=routes)
    app.state.handlers = handlers
    return app


def app_from_environment() -> Starlette:
    """The app factory uvicorn's workers call: the configuration comes from the environment."""
    return create_app(ServiceConfig.from_environment())


# --- submissions ---------------------------------------------------------------------------------
def _submission(form, inspected: list[Upload], key: str | None) -> Submission:
    """The submission a form posts: one 'stats' file, one or more 'shard' files, or one 'features'
    file, with its fields checked; its arrays not yet read."""
    by_part = {part: [u for u in inspected if u.part == part] for part in ("stats", "shard", "features")}
    kinds = [kind for kind, part in ((InputKind.STATS, "stats"), (InputKind.SHARDS, "shard"),
                                     (InputKind.FEATURES, "features")) if by_part[part]]
    if len(kinds) != 1 or (kinds[0] is not InputKind.SHARDS and len(inspected) != 1):
        raise Refusal(422, "post one of: a 'stats' file (.npz), one or more 'shard' files (.npz), or a 'features' "
                           "file (.npy)")
    submission = Submission(
        model=uploads.valid_name(uploads.required(form, "model"), "model"),
        checkpoint=uploads.valid_name(uploads.required(form, "checkpoint"), "checkpoint", slash=True),
        reference=uploads.required(form, "reference"), kind=kinds[0], uploads=inspected,
        feature_space=uploads.valid_label(uploads.field(form, "feature_space"), "feature_space"),
        reference_version=uploads.optional_int(uploads.field(form, "reference_version"), "reference_version"),
        train_seed=uploads.optional_int(uploads.field(form, "train_seed"), "train_seed", uploads.SEEDS),
        sample_seed=uploads.optional_int(uploads.field(form, "sample_seed"), "sample_seed", uploads.SEEDS),
        baseline=uploads.optional_name(uploads.field(form, "baseline"), "baseline"),
        idempotency_key=uploads.idempotency_key(key))
    several = [upload.kind is Kind.SPACES for upload in inspected]
    validation_fd = uploads.validation_fd(uploads.field(form, "validation_fd"))
    if any(several):
        if not all(several):
            raise Refusal(422, "the shards mix files of several spaces with files of one")
        split_by_space(submission, validation_fd)
    elif validation_fd:
        raise Refusal(422, "validation_fd normalises the spaces of a file of several spaces (FDr^k); this upload "
                           "holds one space: omit it")
    return submission


def _json(payload, status: int = 200) -> Response:
    if isinstance(payload, list):
        payload = [jsonable(item) for item in payload]
    elif isinstance(payload, dict):
        payload = jsonable(payload)
    return JSONResponse(payload, status_code=status)
