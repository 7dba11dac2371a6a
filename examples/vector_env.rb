# frozen_string_literal: true

# Vectorised environments, as reinforcement learning steps them: N simulated
# environments, one per worker process, each with its own state. Every step
# the parent writes the actions into a shared Int32[N]; each worker steps its
# environment and writes its observation (a stack of 4 frames of 84x84) into
# its row of a shared UInt8[N,84,84,4] and its reward into a shared DFloat[N].
# The dynamics are trivial (a dot that moves), so that what is measured is
# the machinery: the example prints steps per second for
#
#   - a Numo::Parallel::Pool, one environment per worker (sticky: true): the
#     workers and their environments live from step to step;
#   - Numo::Parallel.each per step: new workers every step, the environments'
#     state kept in shared memory;
#   - Parallel.each per step (the parallel gem), the same.
#
#   bundle exec ruby -Ilib examples/vector_env.rb            (ENVS=4 STEPS=2000)

require "numo/parallel"

# N environments over shared arrays: actions, observations, rewards, states.
class VectorEnv
  # A trivial game: a dot that the action moves left, not at all, or right.
  # Its state (the dot's column and the step count) lives in +state+, a row
  # of a shared Int32[N, 2], so that it survives the workers of the per-step
  # variants; a pool's environment could as well keep it in itself.
  class Dot
    SIZE = 84

    def initialize(state, observation)
      @state = state             # Int32[2]: column, steps taken
      @observation = observation # UInt8[84, 84, 4]: the last 4 frames
    end

    def reset
      @state[0] = SIZE / 2
      @state[1] = 0
      @observation.fill(0)
    end

    # Applies +action+ (0, 1 or 2); writes the new frame over the oldest one;
    # returns the reward (1 when the dot is in the middle third).
    def step(action)
      column = (@state[0] + action - 1).clamp(0, SIZE - 1)
      @state[0] = column
      draw(column, (@state[1] += 1) % 4)
      column.between?(SIZE / 3, 2 * SIZE / 3) ? 1.0 : 0.0
    end

    def draw(column, frame)
      @observation[true, true, frame] = 0
      @observation[SIZE / 2, column, frame] = 255
    end
  end

  attr_reader :size, :actions, :observations, :rewards

  def initialize(size)
    @size = size
    @actions = Numo::Int32.new_shared(size)
    @observations = Numo::UInt8.new_shared(size, Dot::SIZE, Dot::SIZE, 4)
    @rewards = Numo::DFloat.new_shared(size)
    @states = Numo::Int32.new_shared(size, 2)
    size.times { |i| env(i).reset }
  end

  # Environment +i+, over its rows of the shared arrays.
  def env(index)
    Dot.new(@states[index, true], @observations[index, true, true, true])
  end

  # What a worker does for environment +i+ in a step.
  def step(index, env = env(index))
    @rewards[index] = env.step(@actions[index])
  end
end

# Steps per second of +steps+ steps, each writing random actions and
# running +step+ (which steps every environment).
def steps_per_second(vec, steps, rng)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  steps.times do
    vec.actions.store(Numo::Int32.new(vec.size).store(Array.new(vec.size) { rng.rand(3) }))
    yield
  end
  steps / (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
end

if $PROGRAM_NAME == __FILE__
  envs = Integer(ENV.fetch("ENVS", 4))
  steps = Integer(ENV.fetch("STEPS", 2000))
  forked_steps = [steps / 40, 10].max # a fork per step costs far more: fewer steps
  vec = VectorEnv.new(envs)
  pool = Numo::Parallel::Pool.new(in_processes: envs, setup: ->(i) { vec.env(i) }) { |i, env| vec.step(i, env) }
  pool.each(0...envs, sticky: true) # warm-up
  rates = {
    "Numo::Parallel::Pool (sticky)" => steps_per_second(vec, steps, Random.new(1)) do
      pool.each(0...envs, sticky: true)
    end,
    "Numo::Parallel.each per step" => steps_per_second(vec, forked_steps, Random.new(2)) do
      Numo::Parallel.each(0...envs, in_processes: envs) { |i| vec.step(i) }
    end,
    "Parallel.each per step" => steps_per_second(vec, forked_steps, Random.new(3)) do
      Parallel.each(0...envs, in_processes: envs) { |i| vec.step(i) }
    end
  }
  pool.close
  puts "#{envs} environments, UInt8[#{envs},84,84,4] observations, #{Parallel.processor_count} cores"
  rates.each { |name, rate| puts format("  %<name>-32s %<rate>9.0f steps/s", name:, rate:) }
  puts "  rewards of the last step: #{vec.rewards.to_a.inspect}"
end
