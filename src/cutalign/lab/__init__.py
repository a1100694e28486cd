"""The judgment lab: a seeded world with exact ground truth, a programmatic judge and a tiny pretrained base.

- :mod:`cutalign.lab.world`: invented countries and people, their facts, judged examples, scoring;
- :mod:`cutalign.lab.tasks`: multi-step arithmetic chains, a second verifiable task;
- :mod:`cutalign.lab.judge`: the programmatic judge (:func:`~cutalign.lab.judge.judge_response`)
  with judgment styles, error rates and gold error spans;
- :mod:`cutalign.lab.tokenizer`, :mod:`cutalign.lab.models`: the offline tokenizer and tiny models;
- :mod:`cutalign.lab.base`: error regimes, the pretraining corpus and the cached pretrained base.

``cutalign demo`` is the lab's smallest preset.
"""
