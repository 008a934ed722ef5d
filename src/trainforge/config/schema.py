"""The run config: one pydantic model per section. Unknown keys are rejected everywhere."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field("smollm2-135m-instruct", description="A model alias (see `trainforge models`) or a local HF folder.")
    trust_remote_code: bool = False


class SplitFractions(Section):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must sum to 1, got train={self.train} + validation={self.validation} "
                f"+ test={self.test} = {total:g}"
            )
        if self.train <= 0:
            raise ValueError("the train fraction must be greater than 0")
        return self


class DataConfig(Section):
    """Where rows come from: one file split by fractions, separate split files, or a bundled task."""

    path: str | None = Field(None, description="One file (jsonl/csv/parquet/HF folder) split by `split` fractions.")
    train: str | None = Field(None, description="Training file, used as is.")
    validation: str | None = None
    test: str | None = None
    task: str | None = Field(None, description="A bundled generated task, e.g. `dates-json`.")
    task_size: int = Field(1000, gt=0, description="Rows to generate for a bundled task.")
    format: Literal["text", "alpaca", "chat"] = "chat"
    text_field: str = "text"
    split: SplitFractions = SplitFractions()
    max_rows: int | None = Field(None, gt=0, description="Use only the first N rows of each source (quick trials).")

    @model_validator(mode="after")
    def _one_source(self):
        sources = [k for k in ("path", "train", "task") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one data source: `data.path` (split by fractions), `data.train` "
                f"(with optional `data.validation` / `data.test` files) or `data.task`; got {sources or 'none'}"
            )
        if (self.validation or self.test) and not self.train:
            raise ValueError("`data.validation` / `data.test` files need `data.train` as the training file")
        return self


class LoraOptions(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class QuantizationOptions(Section):
    bits: Literal[4] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


class MethodConfig(Section):
    name: str = Field("lora", description="Training method, e.g. full | lora | qlora.")
    lora: LoraOptions = LoraOptions()
    quantization: QuantizationOptions = QuantizationOptions()

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from trainforge.methods import method_names

        if name not in method_names():
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
        return name


class EarlyStopping(Section):
    patience: int | None = Field(None, gt=0, description="Evaluations without improvement before stopping.")
    metric: str = "eval_loss"
    greater_is_better: bool = False
    threshold: float = Field(0.0, ge=0)


class TrainingConfig(Section):
    objective: Literal["sft", "clm"] = "sft"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Overrides epochs when set.")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_length: int = Field(512, gt=0, description="Longer sequences are truncated.")
    packing: bool = Field(False, description="Padding-free packing of several examples per row.")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps; default: once per epoch.")
    save_steps: int = Field(100, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    early_stopping: EarlyStopping = EarlyStopping()
    gradient_checkpointing: bool = False
    threads: int | None = Field(None, gt=0, description="CPU threads; default: one per physical core.")
    seed: int = 42


GenerationMetric = Literal["exact_match", "bleu", "rouge"]


class EvaluationConfig(Section):
    perplexity: bool = True
    generation: bool = True
    metrics: list[GenerationMetric] = ["exact_match", "bleu", "rouge"]
    before_after: bool = Field(True, description="Evaluate the base model the same way before training.")
    max_new_tokens: int = Field(64, gt=0)
    max_samples: int | None = Field(None, gt=0)
    batch_size: int = Field(16, gt=0)


class TrackingConfig(Section):
    runs_dir: str = "runs"
    mlflow: bool = True
    tracking_uri: str | None = Field(None, description="Default: sqlite:///<runs_dir>/mlflow.db (embedded).")
    experiment: str = "trainforge"
    report: bool = True


class ExportConfig(Section):
    merge: bool = Field(False, description="Also write the base model with the adapter merged in.")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunConfig(Section):
    name: str | None = Field(None, description="Run directory name; default: <method>-<objective>-<timestamp>.")
    description: str = ""
    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: MethodConfig = MethodConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.match(name):
            raise ValueError("a run name uses letters, digits, '.', '_' and '-' only, starts with a letter or digit")
        return name

    @model_validator(mode="after")
    def _objective_fits_format(self):
        if self.training.objective == "sft" and self.data.format == "text":
            raise ValueError(
                "objective `sft` needs instruction data (`data.format: alpaca` or `chat`); "
                "for raw text use `training.objective: clm`"
            )
        return self
