"""The front study's six architectures timed again in one sitting, on an idle machine, under the study's
own protocol (batch 1, 1 thread, 5 untimed then the median of 30), in 5 interleaved rounds; the figure
per architecture is the median of its round medians."""

import json
import os
import statistics

import pandas as pd

from trainers.efficiency import LatencyProtocol, median_length_texts, model_latency_ms
from trainers.models import build_student, load_classifier, load_tokenizer

NAME = "sentence-transformers/all-MiniLM-L6-v2"
protocol = LatencyProtocol()
tokenizer = load_tokenizer(NAME)
texts = pd.read_csv("/work/shared/data/tweeteval-offensive/validation.csv")["text"].astype(str).tolist()
texts = median_length_texts(texts, tokenizer, protocol.max_length)
teacher = load_classifier(NAME, ["not-offensive", "offensive"]).eval()
models = {
    k: (teacher if k == 6 else build_student(teacher, list(range(1, k + 1))).eval()) for k in range(1, 7)
}
rounds = {k: [] for k in models}
print("load before", os.getloadavg()[0], flush=True)
for r in range(5):
    for k, model in models.items():
        rounds[k].append(model_latency_ms(model, tokenizer, texts, protocol))
    print(r, {k: round(v[-1], 3) for k, v in rounds.items()}, flush=True)
result = {k: statistics.median(v) for k, v in rounds.items()}
print("load after", os.getloadavg()[0])
print(json.dumps({"latency_ms": result, "rounds": rounds}))
json.dump(
    {"latency_ms": result, "rounds": rounds, "protocol": protocol.record()},
    open("/work/bench-runs/latency/latency.json", "w"),
    indent=1,
)
