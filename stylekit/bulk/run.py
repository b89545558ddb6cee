"""One bulk run, as the driver settles it before any work: the one object every engine takes.

`BulkRun.open(config)` makes it once: where the run reads and writes (its layout), the storage
options with the environment's endpoint and region fixed in (resolved once, for every worker),
the model files' bytes as read and verified here, and their digest. The plan joins it once the
listing is done (`planned`). Engines read what they need from it and ship the parts their
workers need; nothing recomputes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from stylekit.bulk.config import BulkConfig
from stylekit.bulk.plan.layout import MANIFEST_DIR, RunLayout
from stylekit.bulk.plan.planner import Plan
from stylekit.errors import ConfigError
from stylekit.files import storage
from stylekit.nn import zoo


@dataclass(frozen=True)
class BulkRun:
    """A run of `config`: made by `open`, planned once by the driver."""

    config: BulkConfig
    layout: RunLayout
    options: storage.StorageOptions  # resolved: what every worker reaches storage with
    models: tuple[bytes, ...] = field(repr=False)  # the model file's bytes (and the --then model's)
    digest: str  # the model's (a chain's: of both) digest, in every manifest row and the settings
    plan: Plan = field(default_factory=Plan)  # what the listing found; empty until `planned`

    @classmethod
    def open(cls, config: BulkConfig) -> BulkRun:
        """The run of `config` before any work: each location one that every node can reach,
        the output's manifest folder writable, and the models read and, where shipped,
        verified; a one-line error for each that is not."""
        from stylekit.nn.modelio import file_digest

        layout = RunLayout.for_config(config)
        options = config.storage_options.resolved()
        for flag, location in (("--input", layout.input_root), ("--output", layout.output_root)):
            storage.require_shared(location, flag)
        storage.require_shared(config.model, "--model")
        if config.keys:
            storage.require_shared(config.keys, "--keys")
        # Before any work; the probe goes where the manifest will, not among the outputs.
        storage.check_writable(storage.join(layout.output_root, MANIFEST_DIR), options, folder=True)
        sources = [config.model, config.then] if config.then else [config.model]  # --then: a chain
        models = [storage.read_bytes(zoo.resolve(m), options) for m in sources]  # unknown names: one line
        for source, data in zip(sources, models, strict=True):
            if (shipped := zoo.shipped_name(source)) is not None:
                zoo.verify(shipped, data)  # a damaged or replaced file: one line, as `stylize` says
        digests = [file_digest(m) for m in models]
        digest = (
            digests[0] if len(digests) == 1 else hashlib.sha256("+".join(digests).encode()).hexdigest()[:16]
        )
        return cls(config, layout, options, tuple(models), digest)

    def planned(self, plan: Plan) -> BulkRun:
        """This run with its plan."""
        return replace(self, plan=plan)

    def check_models(self) -> bool:
        """Load each model file as the engines will: a bad file, a --style the model does not
        hold (or a multi-style model without one), or a chain that cannot work, is a one-line
        error here, before any work. True when this machine has a CUDA GPU."""
        import torch

        from stylekit.infer.selection import choose
        from stylekit.nn.modelio import load_model_bytes
        from stylekit.nn.sr import output_scale

        config = self.config
        loaded = load_model_bytes(self.models[0], name=config.model)
        choose(loaded, config.style_choice, config.model)  # the command's one-line errors
        if output_scale(loaded.model) != 1 and config.style_controls.active:
            raise ConfigError("--strength, --preserve-color and --style-scale apply to style models only")
        if config.then:
            then = load_model_bytes(self.models[1], name=config.then)
            if output_scale(then.model) == 1:
                raise ConfigError(f"--then {config.then} is not a super-resolution model; give e.g. sr_x4")
        return torch.cuda.is_available()
