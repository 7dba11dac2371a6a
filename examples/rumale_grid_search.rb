# frozen_string_literal: true

# A hyper-parameter grid for a Rumale 2.x classifier (random Fourier features
# of an RBF kernel, then logistic regression), one grid point per item of
# Parallel.map. Each worker returns its point's out-of-fold class
# probabilities from 4-fold cross-validation: a DFloat[samples, classes]. The
# grid runs with Parallel.map (results marshaled through a pipe) and with
# Numo::Parallel.map (through shared memory), three times each, alternating;
# the script prints the median times, checks that the results are equal and
# picks the best grid point.
#
#   BUNDLE_GEMFILE=gemfiles/rumale/Gemfile bundle exec ruby -Ilib examples/rumale_grid_search.rb

require "numo/parallel" # numo/shared, the parallel gem and Numo::Parallel
require "rumale"

SAMPLES = 6_000
CLASSES = 8
FOLDS = 4
WORKERS = 2
RUNS = 3

features, labels = Rumale::Dataset.make_blobs(SAMPLES, 16, centers: CLASSES, cluster_std: 4.0, random_seed: 1)
folds = Rumale::ModelSelection::StratifiedKFold.new(n_splits: FOLDS, shuffle: true, random_seed: 1)
                                               .split(features, labels)
grid = [0.005, 0.02, 0.08].product([0.01, 1.0]) # [gamma, reg_param]

# Out-of-fold probabilities of one grid point: row i comes from the model
# trained on the folds that do not hold sample i.
def out_of_fold_probabilities(samples, targets, folds, (gamma, reg_param))
  probabilities = Numo::DFloat.zeros(samples.shape[0], CLASSES)
  folds.each do |train, test|
    rff = Rumale::KernelApproximation::RBF.new(gamma:, n_components: 128, random_seed: 1)
    model = Rumale::LinearModel::LogisticRegression.new(reg_param:, max_iter: 200)
    model.fit(rff.fit_transform(samples[train, true]), targets[train])
    probabilities[test, true] = model.predict_proba(rff.transform(samples[test, true]))
  end
  probabilities
end

def timed
  t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  result = yield
  [result, Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0]
end

work = ->(point) { out_of_fold_probabilities(features, labels, folds, point) }
results = {}
times = Hash.new { |hash, library| hash[library] = [] }
RUNS.times do
  [Parallel, Numo::Parallel].each do |library|
    results[library], seconds = timed { library.map(grid, in_processes: WORKERS, &work) }
    times[library] << seconds
  end
end
median = ->(library) { times[library].sort[RUNS / 2] }
ours = results[Numo::Parallel]

puts "#{grid.size} grid points x #{FOLDS} folds, #{SAMPLES} samples, #{CLASSES} classes, #{WORKERS} worker " \
     "processes; each result DFloat#{ours.first.shape.inspect} (#{(ours.sum(&:byte_size) / 1e6).round(1)} MB in all)"
puts format("Parallel.map (Marshal):  %<s>6.2f s (median of #{RUNS})", s: median.call(Parallel))
puts format("Numo::Parallel.map:      %<s>6.2f s (median of #{RUNS})", s: median.call(Numo::Parallel))
abort "the results differ" unless ours == results[Parallel]
puts "results are equal; in shared memory: #{ours.all?(&:shared?)}"

accuracy = ours.map { |probabilities| probabilities.argmax(axis: 1).eq(labels).count_true / SAMPLES.to_f }
grid.zip(accuracy).each do |(gamma, reg_param), score|
  puts format("  gamma %<gamma>-6g reg_param %<reg>-5g out-of-fold accuracy %<score>.4f",
              gamma:, reg: reg_param, score:)
end
best_gamma, best_reg = grid[accuracy.each_with_index.max.last]
puts "best: gamma #{best_gamma}, reg_param #{best_reg}"
