"""Search strategies, each an Optuna sampler proposing whole architectures of a :class:`SearchSpace`.

``rl``: MnasNet's controller, a recurrent (LSTM) policy that emits the per-stage choices one after
another, trained with REINFORCE against a moving-average baseline of the reward. ``evolution``:
regularised (aging) evolution. ``tpe`` and ``nsga2``: Optuna's samplers (NSGA-II searches the
accuracy–multiply-adds Pareto front). ``random``: uniform sampling.

The learnt samplers keep no state that storage does not: before every proposal they replay the
study's finished trials (choices and reward, in trial order) they have not seen yet, and they draw
from a random stream keyed by how many they have seen. A search killed and resumed, or a second
worker joining the same study, therefore rebuilds exactly the same policy or population.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from effnet.errors import UserError, check_whole_number
from effnet.nas.space import SearchSpace

#: Policy-gradient algorithms of the ``rl`` controller.
RL_ALGORITHMS = ("reinforce", "ppo")

#: Strategy names with a line of help each (``effnet nas --help`` lists them).
STRATEGIES: dict[str, str] = {
    "rl": "MnasNet's RNN controller trained with REINFORCE (or PPO) and a moving-average baseline",
    "evolution": "regularised (aging) evolution: mutate the best of a random sample, drop the oldest",
    "tpe": "Optuna's multivariate tree-structured Parzen estimator on the reward",
    "nsga2": "Optuna's NSGA-II on (accuracy, multiply-adds): the Pareto front",
    "random": "uniform random architectures (a baseline for the others)",
}


def _busy(study: Study, trial: FrozenTrial) -> int:
    """How many earlier trials other workers are still evaluating."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number)


def _stream_key(seed: int, seen: int, study: Study, trial: FrozenTrial) -> str:
    """A random-stream key that is the same for a resumed search, distinct for concurrent workers."""
    return f"{seed}:{seen}:{_busy(study, trial)}"


def finished_trials(study: Study) -> list[FrozenTrial]:
    """Evaluated trials with a reward, in trial order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if "reward" in t.user_attrs), key=lambda t: t.number)


class _SpaceSampler(BaseSampler):
    """A sampler that proposes every parameter of the space jointly (Optuna's relative sampling)."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self._distributions = space.distributions()
        self._fallback = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        return self.propose(study, trial)

    def propose(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        raise NotImplementedError


# -- reinforcement learning -------------------------------------------------------------------------


class Controller(nn.Module):
    """An LSTM policy over a sequence of categorical decisions (one softmax head per decision).

    Each step feeds the embedding of the previous decision's choice; the heads start at zero, so the
    first policy is uniform.
    """

    def __init__(self, sizes: Sequence[int], hidden: int = 64) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden) for n in self.sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in self.sizes)
        for head in self.heads:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(
        self, actions: Sequence[int] | None = None, generator: torch.Generator | None = None
    ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Sample (or score the given) actions: (actions, summed log-probability, summed entropy)."""
        x, state = self.start, None
        chosen: list[int] = []
        log_prob = torch.zeros(())
        entropy = torch.zeros(())
        for step, (head, embedding) in enumerate(zip(self.heads, self.embeddings)):
            h, c = self.cell(x, state)
            state = (h, c)
            dist = torch.distributions.Categorical(logits=head(h)[0])
            if actions is None:
                action = int(torch.multinomial(dist.probs.detach(), 1, generator=generator).item())
            else:
                action = int(actions[step])
            chosen.append(action)
            log_prob = log_prob + dist.log_prob(torch.tensor(action))
            entropy = entropy + dist.entropy()
            x = embedding(torch.tensor([action]))
        return chosen, log_prob, entropy

    def probabilities(self) -> list[list[float]]:
        """Per decision, the probabilities of its options along the most likely sequence."""
        x, state, out = self.start, None, []
        with torch.no_grad():
            for head, embedding in zip(self.heads, self.embeddings):
                h, c = self.cell(x, state)
                state = (h, c)
                probs = torch.softmax(head(h)[0], -1)
                out.append(probs.tolist())
                x = embedding(probs.argmax().view(1))
        return out


class Reinforce:
    """Policy gradient on the controller against a moving-average baseline b of the reward.

    ``reinforce``: one Adam step on −(R − b) log π(a) − β H(π) per evaluated architecture.
    ``ppo`` (MnasNet's choice): architectures are collected in batches of ``batch``; each full batch
    gets ``ppo_epochs`` Adam steps on the clipped surrogate −min(ρA, clip(ρ, 1 ± ε)A) − β H(π), with
    ρ = π(a) / π_old(a) and π_old the policy that sampled the batch.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        seed: int = 0,
        algorithm: str = "reinforce",
        lr: float = 0.02,
        baseline_decay: float = 0.9,
        entropy_weight: float = 1e-3,
        hidden: int = 64,
        batch: int = 4,
        ppo_epochs: int = 4,
        clip: float = 0.2,
    ) -> None:
        if algorithm not in RL_ALGORITHMS:
            raise UserError(
                f"rl_algorithm {algorithm!r} is unknown (known: {', '.join(RL_ALGORITHMS)})", field="rl_algorithm"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = Controller(sizes, hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.algorithm = algorithm
        self.baseline: float | None = None
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight
        self.batch, self.ppo_epochs, self.clip = batch, ppo_epochs, clip
        self.buffer: list[tuple[list[int], float, float]] = []  # PPO: (actions, advantage, old log-prob)
        self.updates = 0

    def sample(self, generator: torch.Generator) -> list[int]:
        with torch.no_grad():
            actions, _, _ = self.policy(generator=generator)
        return actions

    def update(self, actions: Sequence[int], reward: float) -> float:
        """Learn from one evaluated architecture; returns the advantage R − b it got."""
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward
        self.updates += 1
        if self.algorithm == "reinforce":
            _, log_prob, entropy = self.policy(actions)
            self._step(-advantage * log_prob - self.entropy_weight * entropy)
            return advantage
        with torch.no_grad():
            old = float(self.policy(actions)[1])
        self.buffer.append((list(actions), advantage, old))
        if len(self.buffer) >= self.batch:
            for _ in range(self.ppo_epochs):
                losses = []
                for acts, adv, old_log_prob in self.buffer:
                    _, log_prob, entropy = self.policy(acts)
                    ratio = torch.exp(log_prob - old_log_prob)
                    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - self.clip, 1 + self.clip) * adv)
                    losses.append(-surrogate - self.entropy_weight * entropy)
                self._step(torch.stack(losses).mean())
            self.buffer.clear()
        return advantage

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": self.baseline,
            "updates": self.updates,
            "buffer": [list(item) for item in self.buffer],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.updates = state["updates"]
        self.buffer = [(list(a), float(adv), float(old)) for a, adv, old in state.get("buffer", [])]


class RLSampler(_SpaceSampler):
    """MnasNet's controller as a sampler: replays finished trials into REINFORCE, then samples."""

    def __init__(self, space: SearchSpace, seed: int = 0, **reinforce: Any) -> None:
        super().__init__(space, seed)
        self.learner = Reinforce([len(space.options(d)) for _, d in space.tokens], seed=seed, **reinforce)
        self.seen: set[int] = set()

    def sync(self, study: Study) -> None:
        """Apply every finished trial not yet seen, in trial order."""
        for t in finished_trials(study):
            if t.number not in self.seen:
                self.learner.update(self.space.indices(t.params), float(t.user_attrs["reward"]))
                self.seen.add(t.number)

    def propose(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        self.sync(study)
        generator = torch.Generator().manual_seed(hash_key(_stream_key(self.seed, len(self.seen), study, trial)))
        return self.space.params(self.learner.sample(generator))


def hash_key(key: str) -> int:
    """A stable 63-bit integer from a string (Python's str hash is salted per process)."""
    return random.Random(key).getrandbits(63)


# -- regularised evolution --------------------------------------------------------------------------


class EvolutionSampler(_SpaceSampler):
    """Aging evolution (Real et al. 2019): random until ``population`` trials have finished; then
    mutate one decision of the best of ``sample_size`` random members of the latest ``population``.
    The first proposal is the reference architecture when the space holds it."""

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 16, sample_size: int = 4) -> None:
        super().__init__(space, seed)
        check_whole_number("population", population, 1)
        check_whole_number("sample_size", sample_size, 1, high=population)
        self.population = population
        self.sample_size = sample_size

    def propose(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        done = finished_trials(study)
        rng = random.Random(_stream_key(self.seed, len(done), study, trial))
        if len(done) < self.population:
            reference = self.space.reference_params()
            if not done and reference is not None and _busy(study, trial) == 0:
                return reference
            return self.space.sample(rng)
        members = done[-self.population :]
        parent = max(rng.sample(members, self.sample_size), key=lambda t: (t.user_attrs["reward"], -t.number))
        return self.mutate(parent.params, rng)

    def mutate(self, params: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """Change one decision to another of its options."""
        child = dict(params)
        movable = [(name, d) for name, d in self.space.tokens if len(self.space.options(d)) > 1]
        if not movable:
            return child
        name, decision = rng.choice(movable)
        child[name] = rng.choice([v for v in self.space.options(decision) if v != params[name]])
        return child


class UniformSampler(_SpaceSampler):
    """Uniformly random architectures, reproducible per position in the search."""

    def propose(self, study: Study, trial: FrozenTrial) -> dict[str, Any]:
        done = finished_trials(study)
        return self.space.sample(random.Random(_stream_key(self.seed, len(done), study, trial)))


def make_sampler(
    strategy: str,
    space: SearchSpace,
    *,
    seed: int = 0,
    population: int | None = None,
    sample_size: int | None = None,
    rl_algorithm: str = "reinforce",
) -> BaseSampler:
    """The Optuna sampler of a strategy name (see :data:`STRATEGIES`)."""
    if strategy == "rl":
        return RLSampler(space, seed, algorithm=rl_algorithm)
    if strategy == "evolution":
        pop = population or 16
        return EvolutionSampler(space, seed, pop, sample_size or max(1, min(4, pop // 2)))
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=population or 10)
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population or 16)
    if strategy == "random":
        return UniformSampler(space, seed)
    raise UserError(f"strategy {strategy!r} is unknown (known: {', '.join(STRATEGIES)})", field="strategy")


def is_multi_objective(strategy: str) -> bool:
    """Whether the strategy optimises (accuracy, multiply-adds) jointly instead of the reward."""
    return strategy == "nsga2"
