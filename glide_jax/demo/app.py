"""The page: Generate, Inpaint and Edit tabs over one server's models (Gradio Blocks).

Only layout and conversion live here: Gradio's values become the request
dataclasses of :mod:`.handlers`, a ``ValueError`` becomes ``gr.Error`` (shown
in the page; the server keeps serving) and the handlers' warnings and prompt
notes become ``gr.Warning`` / ``gr.Info``. Uploaded pictures are checked
(:func:`.handlers.check_upload`) before they are decoded (:func:`editor_value`),
so a file that is not a picture, or one declaring millions of pixels, gets a
sentence instead of Gradio's message with the server's temporary path. Every sampling event shares
one concurrency group of size 1, so requests of all visitors queue for the
models one at a time and no request sees another's progress or images; until
the start-up warm-up is done (:class:`.warmup.Readiness`) the page says so and
a request waits for it. Elements the browser tests find carry ``elem_id``s.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
from PIL import Image

from glide_jax.demo import handlers
from glide_jax.demo.models import DemoModels
from glide_jax.demo.progress import ForwardingProgress, install
from glide_jax.demo.warmup import Readiness
from glide_jax.diffusion.samplers import sampler_names
from glide_jax.errors import ANTICIPATED, InputError, describe
from glide_jax.sampling.loading import EMBEDDED_SETS
from glide_jax.sampling.options import BASE_DEFAULT, DEFAULT, GUIDANCE_DEFAULT, resolve_stage, step_count

# Prompts the embedded models draw well (they grade correct on the held-out evaluation).
EMBEDDED_EXAMPLES = ["a red circle", "a large green circle", "a red circle above a blue square",
                     "a small yellow triangle to the left of a purple square"]
OPENAI_EXAMPLES = ["an oil painting of a corgi", "a crayon drawing of a space elevator",
                   "a stained glass window of a lighthouse"]
GALLERY_HEIGHT = 360  # pixels of the gallery and the image boxes
QUEUE_GROUP = "models"  # one concurrency group: the three tabs share the loaded models


def painted_mask(editor_value) -> tuple:
    """``(image, keep)`` of an ImageEditor value: its background and True where no brush layer painted."""
    if not editor_value or editor_value.get("background") is None:
        raise InputError("no image: upload the picture to inpaint first")
    background = np.asarray(editor_value["background"])
    painted = np.zeros(background.shape[:2], bool)
    for layer in editor_value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.ndim == 3 and layer.shape[-1] == 4:
            alpha = layer[..., 3] > 0
        else:
            alpha = np.asarray(layer).reshape(layer.shape[:2] + (-1,)).max(-1) > 0
        if alpha.shape != painted.shape:
            alpha = np.asarray(Image.fromarray(alpha).resize(painted.shape[::-1], Image.NEAREST))
        painted |= alpha
    return background, ~painted


def drawn_image(editor_value) -> Optional[np.ndarray]:
    """The picture of an ImageEditor value with what was drawn on it."""
    if not editor_value:
        return None
    return editor_value.get("composite") if editor_value.get("composite") is not None else \
        editor_value.get("background")


WAITING = "the server is warming up (compiling the models); this request starts when that is done"
STATUS_SECONDS = 2.0  # how often the page asks whether the warm-up is done


def wait_until_ready(readiness: Readiness, progress: Callable) -> None:
    """Hold a request until the server's warm-up is done, saying so through ``progress``."""
    if not readiness.ready:
        progress(0.0, desc=WAITING)
        readiness.wait()
    if readiness.error is not None:
        raise InputError(f"the server failed to start, so it cannot sample: {readiness.error}")


def editor_files(editor, payload):
    """``(bytes or server path, the visitor's file name or None)`` of each picture an ImageEditor payload holds.

    The page sends its canvas as blobs kept on the component under the payload's id; an API client sends
    files, each with the name it had on the visitor's machine.
    """
    blobs = editor.blob_storage.get(payload.id) if payload.id is not None else None
    if blobs is not None:
        return [(data, None) for data in (blobs.background, blobs.composite, *blobs.layers) if data is not None]
    files = [payload.background, payload.composite, *(payload.layers or [])]
    return [(file.path, file.orig_name) for file in files if file is not None]


def editor_value(editor, raw, what: str):
    """An ImageEditor's value from the raw payload the page sent: each picture checked, then decoded by Gradio.

    The Inpaint and Edit events take their inputs unprocessed (``preprocess=False``) so that this, not
    Gradio, decodes the uploads: a refusal is then a sentence naming the visitor's file.
    """
    if raw is None:
        return None
    payload = editor.data_model.model_validate(raw)
    for source, name in editor_files(editor, payload):
        handlers.check_upload(source, what, name)
    try:
        return editor.preprocess(payload)
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        # decoding failed past the header (a truncated file): Gradio's own message names a temporary path
        raise InputError(f"the {what} could not be decoded (a damaged or truncated file?); {handlers.UPLOAD_HINT}"
                         ) from None


def _shown(outcome: handlers.Outcome, sink_warning: Callable, sink_info: Callable) -> List:
    for message in outcome.warnings:
        sink_warning(message)
    for note in outcome.notes:
        sink_info(note)
    return [(image, caption) for image, caption in outcome.images]


def _status(outcome: handlers.Outcome) -> str:
    count = len(outcome.images)
    return f"{count} image{'s' if count != 1 else ''} in {outcome.seconds:.1f} s"


def _recommended(models: DemoModels):
    base = models.generate.base
    options = resolve_stage(DEFAULT, base, BASE_DEFAULT)
    guidance = base.guidance_scale if base.guidance_scale is not None else GUIDANCE_DEFAULT
    steps = step_count(options.steps) or BASE_DEFAULT.steps
    return guidance, options.sampler, steps


def build_app(models: DemoModels, readiness: Optional[Readiness] = None):
    """The ``gr.Blocks`` page over ``models``; ``readiness`` says whether the warm-up is done (None: it is)."""
    import gradio as gr  # deferred: gradio is the optional [demo] extra

    if readiness is None:
        readiness = Readiness()
        readiness.finish("")
    forwarder: ForwardingProgress = install()
    guidance, sampler, steps = _recommended(models)
    has_upsampler = models.generate.upsampler is not None

    def answer(run, request, progress):
        """Run one handler once the server is ready, its errors as ``gr.Error`` and its warnings as toasts."""
        try:
            wait_until_ready(readiness, progress)
            with forwarder.reporting_to(progress):
                outcome = run(models, request)
        except ANTICIPATED as error:
            raise gr.Error(describe(error)) from None
        return _shown(outcome, gr.Warning, gr.Info), outcome

    def status():
        """The status line, and the timer that asks for it again until the warm-up is done."""
        return readiness.status_line(), gr.Timer(active=not readiness.ready)

    def on_generate(prompt, negative, n, seed, scale, sampler_name, step_count, upsample, candidates,
                    progress=gr.Progress()):
        request = handlers.GenerateForm(prompt=prompt, negative_prompt=negative, n=n, seed=seed, guidance=scale,
                                           sampler=sampler_name, steps=step_count, upsample=upsample,
                                           candidates=candidates)
        gallery, outcome = answer(handlers.generate, request, progress)
        return gallery, _status(outcome)

    def on_inpaint(picture, prompt, n, seed, scale, upsample, progress=gr.Progress()):
        try:
            image, keep = painted_mask(editor_value(editor, picture, "picture"))
        except InputError as error:
            raise gr.Error(str(error)) from None
        request = handlers.InpaintForm(prompt=prompt, image=image, mask=keep, n=n, seed=seed, guidance=scale,
                                          upsample=upsample)
        gallery, outcome = answer(handlers.inpaint, request, progress)
        return outcome.original, gallery, _status(outcome)

    def on_edit(drawing, prompt, strength, n, seed, scale, upsample, progress=gr.Progress()):
        try:
            image = drawn_image(editor_value(sketch, drawing, "sketch"))
        except InputError as error:
            raise gr.Error(str(error)) from None
        request = handlers.EditForm(prompt=prompt, image=image, strength=strength, n=n, seed=seed,
                                       guidance=scale, upsample=upsample)
        gallery, outcome = answer(handlers.edit, request, progress)
        return outcome.original, gallery, _status(outcome)

    def common_controls(prefix: str):
        with gr.Row():
            n = gr.Slider(1, handlers.MAX_IMAGES, value=2, step=1, label="images", elem_id=f"{prefix}-n")
            seed = gr.Number(0, precision=0, minimum=0, maximum=2 ** 32 - 1, label="seed", elem_id=f"{prefix}-seed")
            scale = gr.Slider(0.0, 20.0, value=guidance, step=0.5, label="guidance scale")
            upsample = gr.Checkbox(has_upsampler, label="upsample", interactive=has_upsampler)
        return n, seed, scale, upsample

    def gallery(prefix: str):
        return gr.Gallery(label="results (seed, index under each)", format="png", columns=4, fit_columns=False,
                          height=GALLERY_HEIGHT, object_fit="contain", elem_id=f"{prefix}-gallery")

    examples = EMBEDDED_EXAMPLES if models.name in EMBEDDED_SETS else OPENAI_EXAMPLES
    with gr.Blocks(title="glide-jax") as page:
        gr.Markdown(f"## glide-jax\n{models.note}\n\nEach image's seed and index re-make it: "
                    "`glide-jax generate \"PROMPT\" --seed SEED --first-index INDEX` (same settings).")
        server_status = gr.Markdown(readiness.status_line(), elem_id="server-status")
        timer = gr.Timer(STATUS_SECONDS, active=not readiness.ready)
        timer.tick(status, None, [server_status, timer], show_progress="hidden")
        page.load(status, None, [server_status, timer], show_progress="hidden")
        with gr.Tab("Generate", id="generate"):
            prompt = gr.Textbox(label="prompt", placeholder=examples[0], elem_id="gen-prompt")
            negative = gr.Textbox(label="negative prompt (steer away from)", elem_id="gen-negative")
            n, seed, scale, upsample = common_controls("gen")
            with gr.Row():
                sampler_choice = gr.Dropdown(list(sampler_names()), value=sampler, label="sampler")
                step_count = gr.Slider(1, 200, value=steps, step=1, label="steps")
                candidates = gr.Slider(1, handlers.MAX_CANDIDATES, value=1, step=1,
                                       label="candidates (CLIP keeps the best)",
                                       visible=models.generate.clip is not None)
            run = gr.Button("Generate", variant="primary", elem_id="gen-button")
            gr.Examples([[text] for text in examples], inputs=[prompt])
            results = gallery("gen")
            status = gr.Markdown(elem_id="gen-status")
            run.click(on_generate, [prompt, negative, n, seed, scale, sampler_choice, step_count, upsample,
                                    candidates], [results, status], concurrency_id=QUEUE_GROUP,
                      concurrency_limit=1)
        with gr.Tab("Inpaint", id="inpaint", visible=models.inpaint is not None):
            gr.Markdown("Upload a picture, paint over the region to replace with the brush, describe what goes "
                        "there.")
            with gr.Row():
                editor = gr.ImageEditor(type="numpy", image_mode="RGBA", label="picture and mask",
                                        brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=8),
                                        elem_id="inpaint-editor", height=GALLERY_HEIGHT)
                original = gr.Image(label="original (as the model saw it)", interactive=False, format="png",
                                    elem_id="inpaint-original", height=GALLERY_HEIGHT)
            inpaint_prompt = gr.Textbox(label="prompt for the painted region", elem_id="inpaint-prompt")
            inpaint_n, inpaint_seed, inpaint_scale, inpaint_up = common_controls("inpaint")
            inpaint_run = gr.Button("Inpaint", variant="primary", elem_id="inpaint-button")
            inpaint_results = gallery("inpaint")
            inpaint_status = gr.Markdown(elem_id="inpaint-status")
            inpaint_run.click(on_inpaint, [editor, inpaint_prompt, inpaint_n, inpaint_seed, inpaint_scale,
                                           inpaint_up], [original, inpaint_results, inpaint_status],
                              concurrency_id=QUEUE_GROUP, concurrency_limit=1, preprocess=False)
        with gr.Tab("Edit", id="edit"):
            gr.Markdown("Upload or draw a sketch; the model re-draws it as the prompt. Strength is the part of "
                        "the chain re-run: near 1 ignores the sketch, low values keep it.")
            with gr.Row():
                sketch = gr.ImageEditor(type="numpy", image_mode="RGB", label="sketch", elem_id="edit-sketch",
                                        value=np.full((256, 256, 3), 255, np.uint8), height=GALLERY_HEIGHT)
                edit_original = gr.Image(label="sketch (as the model saw it)", interactive=False, format="png",
                                         height=GALLERY_HEIGHT, elem_id="edit-original")
            edit_prompt = gr.Textbox(label="prompt", elem_id="edit-prompt")
            strength = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="strength")
            edit_n, edit_seed, edit_scale, edit_up = common_controls("edit")
            edit_run = gr.Button("Edit", variant="primary", elem_id="edit-button")
            edit_results = gallery("edit")
            edit_status = gr.Markdown(elem_id="edit-status")
            edit_run.click(on_edit, [sketch, edit_prompt, strength, edit_n, edit_seed, edit_scale, edit_up],
                           [edit_original, edit_results, edit_status], concurrency_id=QUEUE_GROUP,
                           concurrency_limit=1, preprocess=False)
    return page
