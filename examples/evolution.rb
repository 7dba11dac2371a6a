# frozen_string_literal: true

# An evolutionary search in a loop of generations, while the parent holds a
# large dataset: each generation evaluates a population of candidate weight
# vectors (the loss of a linear model on the dataset), keeps the best, and
# mutates them into the next population.
#
# The dataset and the population are shared arrays made once: the workers
# read the dataset where the parent made it, and each generation's
# population, which the parent writes in place, with no copy. The example
# runs the same search with a Numo::Parallel::Pool (workers forked once) and
# with Numo::Parallel.map (new workers every generation), prints the time
# per generation of each, and checks that both find the same weights.
#
#   bundle exec ruby -Ilib examples/evolution.rb       (SAMPLES=400000 GENERATIONS=20)

require "numo/parallel"

SAMPLES = Integer(ENV.fetch("SAMPLES", 400_000))
FEATURES = 16
POPULATION = 32
SURVIVORS = 8
GENERATIONS = Integer(ENV.fetch("GENERATIONS", 20))
WORKERS = 2

Numo::NArray.srand(7)
TRUE_WEIGHTS = Numo::DFloat.new(FEATURES).rand(-1, 1)
# The dataset, in shared memory: features and targets (about 50 MiB).
DATA = Numo::DFloat.new_shared(SAMPLES, FEATURES).store(Numo::DFloat.new(SAMPLES, FEATURES).rand_norm)
TARGETS = Numo::DFloat.new_shared(SAMPLES).store(DATA.dot(TRUE_WEIGHTS) + Numo::DFloat.new(SAMPLES).rand_norm(0, 0.1))

# The mean squared error of candidate +weights+ on the dataset.
def loss(weights)
  error = DATA.dot(weights) - TARGETS
  (error * error).mean
end

# The next population: the survivors, and mutations of them.
def next_population(population, losses, rng)
  best = losses.sort_index[0...SURVIVORS]
  parents = population[best, true].dup
  children = Numo::DFloat.new(POPULATION - SURVIVORS, FEATURES).rand_norm(0, 0.05)
  children += parents[Numo::Int32.new(POPULATION - SURVIVORS).rand(SURVIVORS), true]
  population[0...SURVIVORS, true] = parents
  population[SURVIVORS.., true] = children
  rng.rand # the search's own state moves on
end

# Runs the search, evaluating each generation with +evaluate+ (which gets
# the shared population and returns its losses); returns the best weights
# and the seconds per generation.
def search(evaluate)
  Numo::NArray.srand(11)
  population = Numo::DFloat.new_shared(POPULATION, FEATURES).rand_norm
  rng = Random.new(3)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  losses = nil
  GENERATIONS.times do
    losses = Numo::DFloat.cast(evaluate.call(population))
    next_population(population, losses, rng)
  end
  seconds = (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) / GENERATIONS
  [population[losses.min_index, true].dup, seconds]
end

if $PROGRAM_NAME == __FILE__
  pool = Numo::Parallel::Pool.new(in_processes: WORKERS) { |candidate, _| loss(candidate) }
  with_pool, pool_seconds = search(->(population) { pool.map(POPULATION.times.map { |i| population[i, true] }) })
  pool.close
  forking = lambda do |population|
    Numo::Parallel.map(0...POPULATION, in_processes: WORKERS) { |i| loss(population[i, true]) }
  end
  with_map, map_seconds = search(forking)
  puts "#{GENERATIONS} generations of #{POPULATION} candidates on #{SAMPLES} x #{FEATURES} samples " \
       "(#{(DATA.byte_size + TARGETS.byte_size) >> 20} MiB, shared), #{WORKERS} workers"
  puts format("  Numo::Parallel::Pool:  %<ms>8.1f ms per generation", ms: pool_seconds * 1000)
  puts format("  Numo::Parallel.map:    %<ms>8.1f ms per generation (%<ratio>.1fx the pool's)",
              ms: map_seconds * 1000, ratio: map_seconds / pool_seconds)
  puts "  same weights found: #{with_pool == with_map}; distance to the true weights: " \
       "#{format('%.4f', Math.sqrt(((with_pool - TRUE_WEIGHTS)**2).sum))}"
  exit(with_pool == with_map ? 0 : 1)
end
