"""The JSON bodies of the server's API, as pydantic models: they validate requests and make ``/docs``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, model_validator

MAX_TEXTS = 256


def _checked(text: str) -> str:
    if not text.strip():
        raise ValueError("empty text")
    try:
        text.encode()
    except UnicodeEncodeError as error:  # JSON can spell a lone surrogate ("\ud800"); no tokenizer reads one
        raise ValueError(f"not valid Unicode (a lone surrogate at character {error.start})") from error
    return text


Text = Annotated[StrictStr, AfterValidator(_checked)]


class PredictRequest(BaseModel):
    """One text or a list of texts to classify; texts longer than the model's limit are truncated."""

    model_config = ConfigDict(extra="forbid")

    text: Text | None = Field(None, description="One text to classify.", examples=["have a nice day"])
    texts: list[Text] | None = Field(
        None, min_length=1, max_length=MAX_TEXTS, description=f"Up to {MAX_TEXTS} texts to classify."
    )

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give either "text" (a string) or "texts" (a list of strings)')
        return self


class Prediction(BaseModel):
    """The model's answer for one text."""

    label: str = Field(description="The most probable class.")
    scores: dict[str, float] = Field(description="Each class's probability; they sum to 1.")


class Metric(BaseModel):
    """A test metric: one run's value, or the mean and 95% CI half-width over seeds."""

    mean: float
    ci95: float | None = None
    n: int = 1


class ModelCard(BaseModel):
    """What the demo page shows of the model it serves."""

    name: str = Field(description="The model folder, as given to --model.")
    method: str | None = Field(description="How it was trained (odd, even, lora, teacher), when known.")
    labels: list[str]
    layers: int
    parameters: int
    size_bytes: int = Field(description="The model folder's size on disk.")
    max_length: int = Field(description="Tokens read per text; longer texts are truncated.")
    test: dict[str, Metric] = Field(description="Test metrics from the metrics.json beside the model.")


class Parts(BaseModel):
    """Which parts of the server are on."""

    demo: bool
    dashboard: bool
    report: bool


class Health(BaseModel):
    status: str = "ok"
    parts: Parts


class Problem(BaseModel):
    """Every error: what was wrong, in one line."""

    detail: str
