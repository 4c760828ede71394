"""What every tab of the page shares: the command line's defaults, the folders the page may read and write,
and the UI text in English and Chinese (Gradio's I18n: the browser's locale picks, the page's Settings switch)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UserError


@dataclass(frozen=True)
class WebuiSettings:
    """The page's defaults (from `qwentune webui` options and --config) and the folders it may touch.

    model_name_or_path / adapter_path / config_path pre-fill the page's model row; workdir is the directory
    the command was started in (relative paths typed into the page are relative to it)."""

    model_name_or_path: str
    adapter_path: str | None = None
    config_path: str | None = None
    workdir: Path = field(default_factory=Path.cwd)
    extra_roots: tuple[Path, ...] = ()  # output directories named by the config, when outside workdir
    # Code shipped with a hub model runs only when the command line allowed it (--trust_remote_code true): a
    # visitor of a page opened to other machines must not be able to turn it on.
    trust_remote_code: bool = False
    # The command line's `--key value` options (parse_override_args pairs): applied over every config the page
    # loads, as they are over the --config file on the command line.
    overrides: tuple[tuple[str, str | None], ...] = ()

    def roots(self) -> list[Path]:
        """Folders whose files the page may read or write: the working directory, the config's output
        directories, qwentune's cache and Hugging Face's model and dataset caches.

        Not HF_HOME itself: it holds the user's access tokens (token, stored_tokens), which Gradio's file route
        would otherwise serve to anyone who can open the page."""
        from ...models.gguf_source import cache_root

        env = os.environ.get  # read now, as huggingface_hub and datasets read them (their defaults included)
        hf_home = Path(env("HF_HOME") or Path(env("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
        hub_cache = env("HF_HUB_CACHE") or env("HUGGINGFACE_HUB_CACHE") or hf_home / "hub"
        datasets_cache = env("HF_DATASETS_CACHE") or hf_home / "datasets"
        return [Path(r).expanduser().resolve()
                for r in (self.workdir, *self.extra_roots, cache_root(), hub_cache, datasets_cache)]


def command_line_roots(cfg, config_path: str | os.PathLike | None) -> tuple[Path, ...]:
    """What `qwentune webui` was told on its command line, as extra roots: the --config file itself, the local base
    model and adapter it names (a folder, or a .gguf file), and its output, log, cache and data directories, each
    resolved against the current directory (absolute, symlinks followed).

    Without them the page refused the very model and config it was started with when they lie outside the working
    directory (`qwentune webui --model_name_or_path ~/models/qwen`). Only those paths: not the folder a config file
    sits in, whose other files the page must not read. Hub ids and paths that do not exist add nothing."""
    named = [config_path, cfg.model.model_name_or_path, cfg.eval.adapter_path]
    folders = [cfg.training.output_dir, cfg.training.logging_dir, cfg.eval.eval_output_dir, cfg.data.cache_dir,
               cfg.data.processed_dir]
    roots = [Path(p).expanduser().resolve() for p in named if p and Path(p).expanduser().exists()]
    roots += [Path(p).expanduser().resolve() for p in folders if p]
    return tuple(dict.fromkeys(roots))


def page_path(text: str | os.PathLike, settings: WebuiSettings, what: str) -> Path:
    """A path typed into the page, resolved against the working directory (symlinks followed), when it lies in
    one of settings.roots(); otherwise UserError naming `what`, the path and the allowed folders.

    Stops a page, perhaps opened by someone else on a shared machine, from reading or writing any file of
    the user's (e.g. `../../.ssh/id_rsa` as a dataset)."""
    text = os.fspath(text).strip()
    if not text:
        raise UserError(f"{what}: no path given; type a file or folder under {settings.workdir}.")
    path = (settings.workdir / Path(text).expanduser()).resolve()
    roots = settings.roots()
    inside = [root for root in roots if path == root or path.is_relative_to(root)]
    if inside:
        hidden = [part for part in path.relative_to(inside[0]).parts if part.startswith(".")]
        if hidden:  # .env, .ssh, .git, tokens: what a working directory holds that no page needs
            raise UserError(f"{what}: {text} is a hidden file or lies in a hidden folder ({hidden[0]}), which this page "
                            f"does not read or write; give it a name that does not start with a dot.")
        return path
    raise UserError(f"{what}: {text} is outside the folders this page may use ({', '.join(map(str, roots))}); "
                    f"copy it under {settings.workdir}, or start qwentune webui from its folder.")


def check_remote_code(cfg, settings: WebuiSettings, where: str) -> None:
    """UserError when cfg asks to run a hub model's own code (model.trust_remote_code) and the command line did not
    allow it: the page cannot turn it on by itself (a config file or the form)."""
    if cfg.model.trust_remote_code and not settings.trust_remote_code:
        raise UserError(f"{where}: trust_remote_code is true, which runs Python code shipped with the model; the page "
                        f"allows it only when started with `qwentune webui --trust_remote_code true`.")


def hidden_entries(roots: list[Path]) -> list[Path]:
    """The dot-files and dot-folders directly in each root (.env, .ssh, .git...), for Gradio's blocked_paths: its
    file route serves whatever lies under allowed_paths, and these are no page's business."""
    found = []
    for root in roots:
        try:
            found += [entry for entry in root.iterdir() if entry.name.startswith(".")]
        except OSError:  # a root that does not exist (yet), or cannot be listed
            continue
    return found


def model_reference(text: str, settings: WebuiSettings, what: str) -> str:
    """A model or adapter typed into the page: a local path must pass page_path; anything that names no
    existing file is kept as a hub id (loading it says what is wrong when it is not one)."""
    from ...models.hub import written_as_path  # the CLI's own path-or-hub-id rule

    text = text.strip()
    if written_as_path(text) or (settings.workdir / text).exists():
        return str(page_path(text, settings, what))
    return text  # a hub id such as Qwen/Qwen2-0.5B, or embedded:SmolLM2-135M-Instruct


def initial_config(settings: WebuiSettings):
    """The config the page starts from (`qwentune webui --config`; the defaults without one), for the values
    the forms show first, with the command line's options over it. The command checked both before the page was built."""
    from ...config import load_config

    return load_config(settings.config_path, list(settings.overrides))


def page_config(config_text: str, model_text: str, settings: WebuiSettings):
    """The Config the page's model row names: its config file (through page_path; empty: the defaults) loaded and
    checked exactly as the command line loads it, with the row's model as model.model_name_or_path (through
    model_reference; empty: the config's). Raises UserError for a path outside the page's folders or a config
    with mistakes (every one named, as `--config` would)."""
    from ...config import load_config

    path = page_path(config_text, settings, "Config file") if config_text and config_text.strip() else None
    overrides = list(settings.overrides)
    if model_text and model_text.strip():
        overrides.append(("model_name_or_path", model_reference(model_text, settings, "Base model")))
    cfg = load_config(path, overrides)
    check_remote_code(cfg, settings, "Config file")
    return cfg


def shows_user_errors(handler):
    """An event handler whose UserError reaches the page as Gradio's error toast with its one sentence
    (gr.Error); any other exception is a bug of ours and keeps its traceback in the server's log.
    Works for plain handlers and for generators (streamed outputs)."""
    import functools
    import inspect

    import gradio as gr

    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def streamed(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except UserError as exc:
                raise gr.Error(str(exc), print_exception=False) from None
        return streamed

    @functools.wraps(handler)
    def plain(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
    return plain


def translations(*tables: dict[str, tuple[str, str]]):
    """gr.I18n from the tabs' TEXT tables ({key: (English, Chinese)}); a key defined twice is a bug."""
    import gradio as gr

    merged: dict[str, tuple[str, str]] = {}
    for table in tables:
        for key, pair in table.items():
            assert key not in merged, f"UI text key {key} is defined twice"
            merged[key] = pair
    return gr.I18n(en={k: en for k, (en, _) in merged.items()}, zh={k: zh for k, (_, zh) in merged.items()})


def t(key: str):
    """A UI text by key (a tab's TEXT table), translated in the browser: for labels, values and Markdown."""
    from gradio.i18n import I18nData

    return I18nData(key)
