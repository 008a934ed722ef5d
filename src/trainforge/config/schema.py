"""The run config: one pydantic model per section. Unknown keys are rejected everywhere."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainforge.errors import ConfigError

BUNDLED_DATASETS = ("breast_cancer", "wine", "iris", "digits", "diabetes")  # scikit-learn's, shipped with it


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name: str = Field("smollm2-135m-instruct", description="A model alias (see `trainforge models`) or a local HF folder; "
                      "for tabular tasks an estimator alias (random_forest, lightgbm, logistic_regression, ...).")
    trust_remote_code: bool = False
    params: dict[str, Any] = Field({}, description="Tabular tasks: keyword arguments of the estimator.")


class SplitFractions(Section):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    strategy: Literal["random", "stratified", "group", "time"] = Field(
        "random", description="Tabular tasks: how rows are assigned (group needs `data.group_column`, "
        "time needs `data.time_column`; the latest rows become the test split).")

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
    dataset: str | None = Field(None, description="Tabular tasks: a scikit-learn bundled dataset by name "
                                f"({', '.join(BUNDLED_DATASETS)}).")
    format: Literal["text", "alpaca", "chat", "preference", "tabular", "classification"] = Field(
        "chat", description="preference: `prompt` / `chosen` / `rejected` rows (strings or message lists) for "
        "objectives dpo / orpo and task reward.")
    text_field: str = "text"
    target: str | None = Field(None, description="Tabular tasks: the column to predict (bundled datasets: `target`); "
                               "text classification: the label field (default `label`, multi-label `labels`).")
    multi_label: bool = Field(False, description="Text classification: each row has a list of labels (`labels`).")
    drop_columns: list[str] = Field([], description="Tabular tasks: columns that are not features (ids, leaks).")
    group_column: str | None = Field(None, description="Rows sharing a value stay in one split / fold; not a feature.")
    time_column: str | None = Field(None, description="Orders rows for time splits and time-series CV.")
    split: SplitFractions = SplitFractions()
    max_rows: int | None = Field(None, gt=0, description="Use only the first N rows of each source (quick trials).")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str | None) -> str | None:
        if name is not None and name not in BUNDLED_DATASETS:
            raise ValueError(f"unknown bundled dataset {name!r}; expected one of {', '.join(BUNDLED_DATASETS)}")
        return name

    @model_validator(mode="after")
    def _one_source(self):
        sources = [k for k in ("path", "train", "task", "dataset") if getattr(self, k)]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one data source: `data.path` (split by fractions), `data.train` "
                f"(with optional `data.validation` / `data.test` files), `data.task` or `data.dataset`; got {sources or 'none'}"
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


class IA3Options(Section):
    target_modules: list[str] | None = Field(None, description="Default: peft's choice for the architecture.")
    feedforward_modules: list[str] | None = Field(None, description="Scaled on their input; a subset of target_modules.")


class AdapterOptions(Section):
    bottleneck: int = Field(16, gt=0, description="Width of the down-projection.")
    activation: Literal["gelu", "relu", "tanh"] = "gelu"
    target_modules: list[str] | None = Field(None, description="Name suffixes of the output projections to follow; "
                                             "default: attention output and feed-forward output of each layer.")


class FeatureOptions(Section):
    estimator: str | None = Field(None, description="None: train the classification head on the frozen encoder; "
                                  "an estimator alias (logistic_regression, svm, ...): fit it on mean-pooled embeddings.")
    params: dict[str, Any] = Field({}, description="Keyword arguments of the estimator.")


class VirtualTokenOptions(Section):
    num_virtual_tokens: int = Field(16, gt=0)
    init_text: str | None = Field(None, description="Prompt tuning: initialise the virtual tokens from this text's "
                                  "embeddings (default: random).")
    projection: bool = Field(False, description="Prefix tuning: reparameterise the prefix through a 2-layer MLP.")


class MethodConfig(Section):
    name: str = Field("lora", description="Training method: full | lora | qlora | prefix | prompt (task lm); "
                      "full | lora | ia3 | adapter | feature-extraction (task text-classification).")
    lora: LoraOptions = LoraOptions()
    quantization: QuantizationOptions = QuantizationOptions()
    ia3: IA3Options = IA3Options()
    adapter: AdapterOptions = AdapterOptions()
    features: FeatureOptions = FeatureOptions()
    virtual_tokens: VirtualTokenOptions = VirtualTokenOptions()

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
    objective: Literal["sft", "clm", "mlm", "dpo", "orpo", "ppo", "grpo", "rloo"] = Field(
        "sft", description="sft: instruction tuning (loss on answers); clm: causal-LM continued pretraining on text; "
        "mlm: masked-LM continued pretraining of an encoder (BERT-like) on text; dpo / orpo: preference alignment "
        "on `data.format: preference` pairs (TRL's DPOTrainer / ORPOTrainer); ppo / grpo / rloo: online RL of the "
        "model against `reward:` on the data's prompts (see `rl:`).")
    beta: float = Field(0.1, gt=0, description="dpo: the KL strength of the implicit reward; orpo: the weight "
                        "(lambda) of the odds-ratio term.")
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="mlm: share of tokens masked per sequence.")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Overrides epochs when set.")
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_length: int = Field(512, gt=0, description="Longer sequences are truncated.")
    packing: bool = Field(False, description="Padding-free packing of several examples per row.")
    chunked_loss: bool = Field(True, description="sft / clm: cross-entropy only at label positions, in chunks, with "
                               "the LM head recomputed in backward; full-vocabulary logits of the batch never exist.")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    attention: Literal["auto", "sdpa", "eager"] = Field("auto", description="auto: eager on CPU for max_length ≤ "
                                                         "512 (faster backward there), else the model's default.")
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


class RewardConfig(Section):
    """What scores a completion in RL objectives (ppo, grpo, rloo): give exactly one of `model` and `function`."""

    model: str | None = Field(None, description="A trained reward model: a `task: reward` run directory or an HF "
                              "folder loadable as AutoModelForSequenceClassification with one label.")
    function: str | None = Field(None, description="A program reward `package.module:function`, called as "
                                 "function(prompt, completion) -> float with the last user message and the answer, "
                                 "e.g. trainforge.data.tasks:dates_json_reward.")
    max_length: int = Field(512, gt=0, description="Reward model: longer conversations are truncated.")

    @model_validator(mode="after")
    def _one_source(self):
        if self.model and self.function:
            raise ValueError("give one reward: `reward.model` (a reward model) or `reward.function` (a program), not both")
        return self


class RLConfig(Section):
    """Online RL (objectives ppo, grpo, rloo). A step = `training.batch_size` prompts rolled out and learned from."""

    kl_coef: float = Field(0.05, ge=0, description="Weight of the KL penalty to the frozen reference (the start model).")
    max_new_tokens: int = Field(32, gt=0, description="Longest sampled completion.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    num_generations: int = Field(4, ge=2, description="grpo / rloo: completions per prompt, compared to each other.")
    ppo_epochs: int = Field(2, gt=0, description="ppo: optimisation passes over each batch of rollouts.")
    minibatches: int = Field(1, gt=0, description="ppo: minibatches per pass.")
    clip_range: float = Field(0.2, gt=0, description="Policy ratio clip (ppo, grpo, rloo).")
    value_clip_range: float = Field(0.2, gt=0, description="ppo: how far a value prediction may move per batch.")
    vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss.")
    gamma: float = Field(1.0, gt=0, le=1, description="ppo: discount.")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda.")


class TrackingConfig(Section):
    runs_dir: str = "runs"
    mlflow: bool = True
    tracking_uri: str | None = Field(None, description="Default: sqlite:///<runs_dir>/mlflow.db (embedded).")
    experiment: str = "trainforge"
    report: bool = True


class PreprocessingConfig(Section):
    """Tabular tasks: column kinds are detected; every choice here overrides the detection or a default."""

    numeric: list[str] = Field([], description="Columns to treat as numbers.")
    categorical: list[str] = Field([], description="Columns to treat as categories.")
    dates: list[str] = Field([], description="Columns to parse as dates (year, month, day, weekday, ordinal).")
    impute_numeric: Literal["mean", "median", "most_frequent", "zero"] = "median"
    impute_categorical: Literal["most_frequent", "missing"] = "most_frequent"
    scale: Literal["auto", "standard", "minmax", "robust", "none"] = Field(
        "auto", description="auto: standardize for linear models, SVMs, MLPs and clustering; not for trees.")
    encode: Literal["auto", "onehot", "ordinal"] = Field(
        "auto", description="auto: one-hot up to `max_onehot` categories, ordinal above.")
    max_onehot: int = Field(20, gt=1)
    unknown_categories: Literal["warn", "error"] = Field(
        "warn", description="A category seen only at predict time: encode as unknown with a warning, or fail.")


class CVConfig(Section):
    strategy: Literal["auto", "none", "kfold", "stratified", "group", "time"] = Field(
        "auto", description="auto: follows `data.split.strategy` (stratified k-fold for classification, "
        "none for clustering).")
    folds: int = Field(5, ge=2)
    shuffle: bool = True
    metric: str = Field("auto", description="Fold score and tuning objective: accuracy, f1, roc_auc, log_loss, rmse, "
                        "mae, r2, silhouette; auto: accuracy / rmse / silhouette.")


class ParamSpace(Section):
    """One searched key: an int or float range, or a list of choices. `grid` pins the values a grid search tries."""

    type: Literal["int", "float", "categorical"] = "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        return {"type": "categorical", "choices": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _complete(self):
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical search key needs a non-empty `choices` list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"an {self.type} search key needs `low` < `high`, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log-scale search key needs `low` > 0, got {self.low}")
        return self


class TuningConfig(Section):
    strategy: Literal["grid", "random", "bayes"] = Field("bayes", description="bayes: Optuna TPE.")
    trials: int = Field(30, gt=0, description="Trials in the study, all workers together.")
    space: dict[str, ParamSpace] = Field({}, description="Overrides / extends the estimator's default space. A plain key "
                                         "is an estimator param (`model.params.<key>`); a dotted key is any config key.")
    replace_space: bool = Field(False, description="Search only `space`, not the estimator's default space.")
    grid_points: int = Field(4, ge=2, description="Values per numeric range in a grid search (without `grid`).")
    pruning: bool = Field(True, description="Stop unpromising trials early on their running fold score (median rule).")
    storage: str | None = Field(None, description="Optuna RDB URL; default sqlite:///<runs_dir>/optuna.db. "
                                "A PostgreSQL URL lets workers on many machines share one study.")
    study_name: str | None = Field(None, description="Default: the run name.")
    startup_trials: int = Field(8, ge=1, description="Random trials before TPE models the space.")
    timeout: float | None = Field(None, gt=0, description="Seconds per worker.")
    metric: str = Field("auto", description="Neural runs (lm, text-classification, multi-task): the validation metric "
                        "to optimise, e.g. eval_loss, eval_accuracy, eval_macro_f1, eval_<task>.rmse; auto: eval_loss. "
                        "Tabular runs optimise `cv.metric`.")


class ActiveConfig(Section):
    """`trainforge active`: pool-based active learning for classification and text-classification runs."""

    strategies: list[Literal["least_confidence", "margin", "entropy", "random"]] = Field(
        ["least_confidence", "margin", "entropy", "random"], min_length=1,
        description="Query strategies; simulate compares them all, interactive queries with the first.")
    initial: int = Field(20, gt=0, description="Labelled rows to start from (a seeded random draw from the pool).")
    batch_size: int = Field(10, gt=0, description="Rows queried per round.")
    rounds: int = Field(10, gt=0, description="Query rounds after the initial labels.")
    mode: Literal["simulate", "interactive"] = Field(
        "simulate", description="simulate: the pool's labels stay hidden until queried, learning curves per strategy; "
        "interactive: write to_label.csv, continue with `--labels`.")
    repeats: int = Field(1, gt=0, description="simulate: seeds averaged per strategy (seed, seed+1, ...).")
    seed: int = 0


class ExportConfig(Section):
    merge: bool = Field(False, description="Also write the base model with the adapter merged in.")


class DistillConfig(Section):
    """Knowledge distillation: the run's model (the student) learns from a teacher's outputs as well as the labels."""

    teacher: str | None = Field(None, description="A finished run (name under `tracking.runs_dir`, or its directory) "
                                "or, for task lm, a model alias / folder. Setting it makes the run a distillation.")
    mode: Literal["logits", "sequence"] = Field(
        "logits", description="logits: KL between teacher and student logits (classes, or next tokens over the answer "
        "tokens); sequence (task lm): the teacher's greedy answers to the training prompts replace the answers, "
        "then the same loss trains on them.")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions before the KL (scaled back by T²).")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha weighs the hard-label loss.")
    student_layers: list[int] | None = Field(
        None, min_length=1, description="Build the student from these teacher layers (0-based, e.g. [0, 2, 4]); "
        "leave out to train `model.name` as the student.")

    @field_validator("student_layers")
    @classmethod
    def _distinct_layers(cls, layers: list[int] | None) -> list[int] | None:
        if layers is not None and (len(set(layers)) != len(layers) or min(layers) < 0):
            raise ValueError(f"`student_layers` lists distinct layer indexes >= 0, got {layers}")
        return layers


class Principle(Section):
    """One principle of a constitution: how to critique an answer against it, and how to revise the answer."""

    name: str
    critique_request: str = Field(..., description="Asked after the answer, e.g. `Point out where your answer breaks "
                                  "the requested format.`")
    revision_request: str = Field(..., description="Asked after the critique, e.g. `Rewrite your answer so it "
                                  "follows the requested format exactly. Reply with the answer only.`")


class ConstitutionConfig(Section):
    """`trainforge constitutional`: answer, critique against a sampled principle, revise (Constitutional AI)."""

    principles: str | list[Principle] | None = Field(
        None, description="A YAML file with a `principles:` list, or the list inline; default: the bundled "
        "recipes/constitution.yaml.")
    samples_per_prompt: int = Field(1, gt=0, description="Distinct principles drawn per prompt; each gives one "
                                    "critique and revision.")
    critic: str | None = Field(None, description="Model alias, folder or run directory that writes the critiques; "
                               "default: the policy (`model.name`) critiques itself.")
    pairs: Literal["revision", "checker"] = Field(
        "revision", description="revision: every changed revision ≻ its original (Constitutional AI); checker: for "
        "prompts with a checkable `constraint` (bundled constrained-answers), the answer that meets it ≻ the one that "
        "does not, and only revisions that meet it become SFT rows; other rows are left out.")
    max_new_tokens: int = Field(48, gt=0)
    do_sample: bool = Field(False, description="false: greedy answers; true: sampled at `temperature`, seeded.")
    temperature: float = Field(0.7, gt=0)
    batch_size: int = Field(16, gt=0)
    seed: int = 0


class TaskHead(Section):
    """One task of a multi-task run: a head on the shared encoder and the data column it learns."""

    name: str = Field(..., description="The task's name in metrics (`after.<name>.accuracy`) and predictions.")
    type: Literal["classification", "regression"] = "classification"
    target: str | None = Field(None, description="The data field holding the task's label or number; default: `name`.")
    weight: float = Field(1.0, ge=0, description="Factor of the task's loss in the summed loss (0: the head does not train).")

    @model_validator(mode="after")
    def _default_target(self):
        if self.target is None:
            self.target = self.name
        return self


class MultiTaskConfig(Section):
    tasks: list[TaskHead] = Field([], description="Task multi-task: the heads on the shared encoder.")
    loss_weighting: Literal["fixed", "uncertainty"] = Field(
        "fixed", description="fixed: the sum of `weight` × task loss; uncertainty: each task's weight is also learned "
        "(exp(-s) × loss + s per task, Kendall et al. 2018), for losses on different scales.")
    sampling: Literal["joint", "round_robin", "proportional"] = Field(
        "joint", description="joint: every batch mixes rows, each task's loss averages over the rows that carry its "
        "label; round_robin / proportional: every batch holds rows labelled for one task, tasks taken in turn / "
        "in proportion to their labelled rows.")

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, tasks: list[TaskHead]) -> list[TaskHead]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be distinct, got {names}")
        return tasks


def method_names_for(task: str) -> list[str]:
    from trainforge.methods import method_names, method_tasks

    return [n for n in method_names() if task in method_tasks(n)]


NEURAL_TASKS = ("lm", "text-classification", "multi-task", "reward")  # tasks that train with `method:` rather than an estimator
PREFERENCE_OBJECTIVES = ("dpo", "orpo")
RL_OBJECTIVES = ("ppo", "grpo", "rloo")
PPO_METHODS = ("full", "lora", "qlora")  # the value head reads hidden states, which virtual tokens would shift
MLM_METHODS = ("full",)  # the bundled encoder ships no MLM head: a fresh head must train with the encoder
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RunConfig(Section):
    name: str | None = Field(None, description="Run directory name; default: <method>-<objective>-<timestamp>.")
    description: str = ""
    task: Literal["lm", "text-classification", "multi-task", "reward", "classification", "regression",
                  "clustering"] = Field(
        "lm", description="lm: train a language model; text-classification: fine-tune an encoder on labelled texts; "
        "multi-task: one shared encoder, one head per `multitask.tasks` entry; "
        "reward: a reward model (a language model with a one-score head) trained on preference pairs; "
        "the others run the classical (tabular) engine.")
    model: ModelConfig = ModelConfig()
    data: DataConfig
    method: MethodConfig = MethodConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    cv: CVConfig = CVConfig()
    tuning: TuningConfig = TuningConfig()
    multitask: MultiTaskConfig = MultiTaskConfig()
    active: ActiveConfig = ActiveConfig()
    distill: DistillConfig = DistillConfig()
    reward: RewardConfig = RewardConfig()
    rl: RLConfig = RLConfig()
    constitution: ConstitutionConfig = ConstitutionConfig()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str | None) -> str | None:
        if name is not None and not _NAME.match(name):
            raise ValueError("a run name uses letters, digits, '.', '_' and '-' only, starts with a letter or digit")
        return name

    @model_validator(mode="after")
    def _method_fits_task(self):
        from trainforge.methods import method_tasks

        if self.task in NEURAL_TASKS:
            if self.task == "multi-task" and "name" not in self.method.model_fields_set:
                self.method.name = "full"
            supported = method_tasks(self.method.name)
            if self.task not in supported:
                raise ValueError(f"key `method.name` = {self.method.name!r} does not support task {self.task} "
                                 f"(it supports {', '.join(supported)}); for {self.task} use one of "
                                 f"{', '.join(n for n in method_names_for(self.task))}")
        return self

    @model_validator(mode="after")
    def _distill_fits_task(self):
        d = self.distill
        if d.teacher is None:
            if d != DistillConfig():
                raise ValueError("the `distill` section needs `distill.teacher`: a finished run or (task lm) a model alias")
            return self
        if self.task not in ("lm", "text-classification"):
            raise ValueError(f"`distill` is for tasks lm and text-classification, not {self.task}")
        if self.task == "lm" and self.training.objective != "sft":
            raise ValueError("`distill` on task lm distils answers: it needs `training.objective: sft`")
        if self.task == "text-classification" and self.data.multi_label:
            raise ValueError("`distill` supports single-label text classification; leave out `data.multi_label`")
        if d.mode == "sequence" and self.task != "lm":
            raise ValueError("`distill.mode: sequence` generates answers: it is for task lm")
        if d.student_layers is not None and self.method.name != "full":
            raise ValueError("a student built from teacher layers (`distill.student_layers`) trains every weight; "
                             f"set `method.name: full` (got {self.method.name!r})")
        return self

    def _text_rows(self, fmt: str, reads: str) -> None:
        """The data of a text task: not a tabular dataset, and `data.format` is `fmt` (the default)."""
        if self.data.dataset:
            raise ValueError(f"`data.dataset` is a tabular dataset; a {self.task} run reads `data.task`, `data.path` "
                             "or `data.train`")
        if "format" not in self.data.model_fields_set:
            self.data.format = fmt
        elif self.data.format != fmt:
            raise ValueError(f"key `data.format` = {self.data.format!r}: a {self.task} run reads {reads}; expected "
                             f"`{fmt}` (or leave it out)")

    @model_validator(mode="after")
    def _text_classification_data(self):
        if self.task != "text-classification":
            return self
        self._text_rows("classification", "text/label rows")
        if self.data.target is None:
            self.data.target = "labels" if self.data.multi_label else "label"
        if "name" not in self.model.model_fields_set:
            self.model.name = "minilm-l6"
        return self

    @model_validator(mode="after")
    def _multi_task_data(self):
        if self.task != "multi-task":
            if self.multitask.tasks:
                raise ValueError("the `multitask` section is for `task: multi-task`")
            return self
        if not self.multitask.tasks:
            raise ValueError("a multi-task run needs `multitask.tasks`: a list of {name, type: classification | "
                             "regression, target, weight}")
        self._text_rows("classification", "rows of text and target fields")
        if self.data.multi_label or self.data.target:
            raise ValueError("a multi-task run names its targets in `multitask.tasks[].target`; leave out "
                             "`data.target` and `data.multi_label`")
        if "name" not in self.model.model_fields_set:
            self.model.name = "minilm-l6"
        return self

    @model_validator(mode="after")
    def _reward_data(self):
        if self.task != "reward":
            return self
        self._text_rows("preference", "preference pairs")
        return self

    @model_validator(mode="after")
    def _tabular_fits_task(self):
        if self.task in ("text-classification", "multi-task", "reward"):
            return self
        if self.task == "lm":
            if self.data.format == "tabular" or self.data.dataset:
                raise ValueError("`data.format: tabular` and `data.dataset` are for tabular tasks; set `task` to "
                                 "classification, regression or clustering")
            if self.data.format == "classification" or self.data.multi_label:
                raise ValueError("`data.format: classification` and `data.multi_label` are for text classification; "
                                 "set `task: text-classification`")
            return self
        from trainforge.classical.estimators import DEFAULT_ESTIMATOR, get_estimator
        from trainforge.classical.metrics import check_metric

        if self.data.task:
            raise ValueError(f"`data.task` is a generated LM task; a {self.task} run reads `data.dataset`, "
                             "`data.path` or `data.train`")
        if "format" not in self.data.model_fields_set:
            self.data.format = "tabular"
        elif self.data.format != "tabular":
            raise ValueError(f"key `data.format` = {self.data.format!r}: a {self.task} run reads tables; "
                             "expected `tabular` (or leave it out)")
        if "name" not in self.model.model_fields_set:
            self.model.name = DEFAULT_ESTIMATOR[self.task]
        try:
            get_estimator(self.model.name, self.task)
        except ConfigError as err:
            raise ValueError(str(err).removeprefix("Key ").rstrip(".")) from None
        if self.data.target is None and self.data.dataset:
            self.data.target = "target"
        if self.data.target is None and self.task != "clustering":
            raise ValueError(f"a {self.task} run needs `data.target`, the column to predict")
        needs = {"group": "group_column", "time": "time_column"}
        for where, strategy in (("data.split.strategy", self.data.split.strategy), ("cv.strategy", self.cv.strategy)):
            column = needs.get(strategy)
            if column and not getattr(self.data, column):
                raise ValueError(f"key `{where}` = {strategy!r} needs `data.{column}`")
        if self.task != "classification" and "stratified" in (self.data.split.strategy, self.cv.strategy):
            raise ValueError(f"stratified splits need class labels; a {self.task} run uses random, group or time")
        check_metric(self.cv.metric, self.task)
        return self

    @model_validator(mode="after")
    def _objective_fits_format(self):
        if self.task != "lm":
            return self
        preference = self.training.objective in PREFERENCE_OBJECTIVES
        if preference != (self.data.format == "preference"):
            raise ValueError(
                f"objective `{self.training.objective}` and `data.format: {self.data.format}` do not fit: objectives "
                f"{' and '.join(PREFERENCE_OBJECTIVES)} learn from `data.format: preference` pairs, and preference "
                "pairs train with those objectives (or `task: reward`)"
            )
        if self.training.objective in RL_OBJECTIVES:
            self._check_rl()
        if self.training.objective == "sft" and self.data.format == "text":
            raise ValueError(
                "objective `sft` needs instruction data (`data.format: alpaca` or `chat`); "
                "for raw text use `training.objective: clm`"
            )
        if self.training.objective == "mlm":
            if self.data.format != "text":
                raise ValueError(f"objective `mlm` trains on raw text; set `data.format: text` (got {self.data.format!r})")
            if self.method.name not in MLM_METHODS:
                raise ValueError(f"objective `mlm` supports methods {', '.join(MLM_METHODS)}; got `method.name` = "
                                 f"{self.method.name!r}")
            if "name" not in self.model.model_fields_set:
                self.model.name = "minilm-l6"
            self.evaluation.generation = False  # an encoder does not generate
        return self

    def _check_rl(self) -> None:
        objective = self.training.objective
        if self.data.format not in ("chat", "alpaca"):
            raise ValueError(f"objective `{objective}` samples answers to the data's prompts; it needs `data.format: "
                             f"chat` or `alpaca` (got {self.data.format!r})")
        if not (self.reward.model or self.reward.function):
            raise ValueError(f"objective `{objective}` needs a reward: `reward.model` (a reward-model run or folder) "
                             "or `reward.function` (`package.module:function(prompt, completion) -> float`)")
        if objective == "ppo" and self.method.name not in PPO_METHODS:
            raise ValueError(f"objective `ppo` supports methods {', '.join(PPO_METHODS)}; got `method.name` = "
                             f"{self.method.name!r}")
