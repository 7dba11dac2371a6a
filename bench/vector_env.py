"""Python's counterpart of examples/vector_env.rb's pool, for bench/pool.rb:
N environments in persistent processes (multiprocessing.Process, one
Pipe each, observations, rewards and actions in shared_memory), stepped the
way gymnasium's AsyncVectorEnv steps them: the parent writes the actions,
sends each worker a step command and waits for each one's reply.

    python3 bench/vector_env.py ENVS STEPS ROUNDS

Prints one line of JSON: the steps per second of each round.
"""
import json
import sys
import time
from multiprocessing import Pipe, Process, shared_memory

import numpy as np

SIZE = 84


def attach(names, envs):
    blocks = [shared_memory.SharedMemory(name=name) for name in names]
    obs = np.ndarray((envs, SIZE, SIZE, 4), dtype=np.uint8, buffer=blocks[0].buf)
    rewards = np.ndarray((envs,), dtype=np.float64, buffer=blocks[1].buf)
    actions = np.ndarray((envs,), dtype=np.int32, buffer=blocks[2].buf)
    return blocks, obs, rewards, actions


def worker(index, envs, conn, names):
    blocks, obs, rewards, actions = attach(names, envs)
    column, steps = SIZE // 2, 0
    while conn.recv():
        column = min(max(column + int(actions[index]) - 1, 0), SIZE - 1)
        steps += 1
        frame = steps % 4
        obs[index, :, :, frame] = 0
        obs[index, SIZE // 2, column, frame] = 255
        rewards[index] = 1.0 if SIZE // 3 <= column <= 2 * SIZE // 3 else 0.0
        conn.send(True)
    del obs, rewards, actions
    for block in blocks:
        block.close()


def main():
    envs, steps, rounds = (int(arg) for arg in sys.argv[1:4])
    blocks = [shared_memory.SharedMemory(create=True, size=size)
              for size in (envs * SIZE * SIZE * 4, envs * 8, envs * 4)]
    names = [block.name for block in blocks]
    views, obs, rewards, actions = attach(names, envs)
    pipes = [Pipe() for _ in range(envs)]
    workers = [Process(target=worker, args=(i, envs, pipes[i][1], names)) for i in range(envs)]
    for process in workers:
        process.start()
    rng = np.random.default_rng(1)
    rates = []
    for _ in range(rounds + 1):  # the first round warms up
        started = time.perf_counter()
        for _ in range(steps):
            actions[:] = rng.integers(0, 3, envs)
            for parent_end, _ in pipes:
                parent_end.send(True)
            for parent_end, _ in pipes:
                parent_end.recv()
        rates.append(steps / (time.perf_counter() - started))
    for parent_end, _ in pipes:
        parent_end.send(False)
    for process in workers:
        process.join()
    del obs, rewards, actions
    for block in views:
        block.close()
    for block in blocks:
        block.close()
        block.unlink()
    print(json.dumps(rates[1:]))


if __name__ == "__main__":
    main()
