"""How fast the trainer learns the labelled examples a worker run produced: the trainer's
own code (`Trainer.learn_examples`: decoding, de-duplication, learning, quality) timed
over every message of the run's examples topic, read first.

    learned_per_second, examples = trainer_examples_per_second(settings)
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streams.kafka import topic_reader
from streams.settings import Settings
from streams.trainer.app import Trainer


def trainer_examples_per_second(settings: Settings, timeout: float = 60.0) -> tuple[float, int]:
    """Examples the trainer learns a second, and how many the examples topic holds."""
    consumer = topic_reader(settings, f"{settings.group_id}-examples-bench")
    topic = TopicPartition(settings.examples_topic, 0, OFFSET_BEGINNING)
    _, end = consumer.get_watermark_offsets(topic, timeout=10)
    consumer.assign([topic])
    messages: list[bytes] = []
    deadline = time.monotonic() + timeout
    position = -1
    while position < end - 1 and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            if message.error() is None:
                messages.append(message.value() or b"")
                position = message.offset() or 0
    consumer.close()
    trainer = Trainer(settings)
    started = time.perf_counter()
    learned = sum(trainer.learn_examples(message) for message in messages)
    seconds = time.perf_counter() - started
    return learned / max(seconds, 1e-9), learned
