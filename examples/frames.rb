# frozen_string_literal: true

# The motivating case: worker processes "simulate" episodes of a game and
# return their frames as NArrays. The parent collects them once with the
# parallel gem (every frame marshaled through a pipe) and once with
# Numo::Parallel (frames stay in shared memory, the pipe carries handles),
# prints both times and checks that the results are equal.
#
#   bundle exec ruby -Ilib examples/frames.rb

require "numo/parallel" # numo/shared, the parallel gem and Numo::Parallel

EPISODES = 24
STEPS = 40 # frames per episode
HEIGHT = 210
WIDTH = 160
WORKERS = 2

# One episode: a ball bouncing over a noisy background, rendered to
# UInt8[STEPS, HEIGHT, WIDTH, 3] frames, plus the episode's scores.
def simulate(episode)
  frames = Numo::UInt8.new(STEPS, HEIGHT, WIDTH, 3)
  frames[] = Numo::UInt8.new(HEIGHT, WIDTH, 3).rand(0, 32) # background; Numo's generator is seeded per episode
  ball_path(Random.new(episode)).each_with_index do |(x, y), t|
    frames[t, y...(y + 8), x...(x + 8), true] = 255
  end
  { episode:, frames:, scores: Numo::DFloat.new(STEPS).rand }
end

# Top-left corners of an 8x8 ball bouncing off the edges, one per step.
def ball_path(rng)
  x = rng.rand(WIDTH - 8)
  y = rng.rand(HEIGHT - 8)
  dx = 3
  dy = 2
  Array.new(STEPS) do
    dx = -dx unless (0..(WIDTH - 9)).cover?(x + dx)
    dy = -dy unless (0..(HEIGHT - 9)).cover?(y + dy)
    [x += dx, y += dy]
  end
end

def collect(runner)
  runner.map(0...EPISODES, in_processes: WORKERS) do |episode|
    Numo::NArray.srand(episode)
    simulate(episode)
  end
end

def timed
  t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  result = yield
  [result, Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0]
end

collect(Numo::Parallel) # warm up both paths once
collect(Parallel)
via_marshal, marshal_time = timed { collect(Parallel) }
via_shared, shared_time = timed { collect(Numo::Parallel) }

bytes = via_shared.sum { |r| r[:frames].byte_size + r[:scores].byte_size }
puts "#{EPISODES} episodes x #{STEPS} frames of UInt8[#{HEIGHT},#{WIDTH},3] " \
     "(#{format('%.1f', bytes.fdiv(1 << 20))} MiB) from #{WORKERS} worker processes"
puts format("Parallel.map (Marshal):   %<ms>7.1f ms", ms: marshal_time * 1e3)
puts format("Numo::Parallel.map:       %<ms>7.1f ms  (%<ratio>.1fx faster)",
            ms: shared_time * 1e3, ratio: marshal_time / shared_time)
abort "the results differ" unless via_shared == via_marshal
puts "results are equal; frames in shared memory: #{via_shared.all? { |r| r[:frames].shared? }}"
