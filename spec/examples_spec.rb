# frozen_string_literal: true

require "open3"

# The examples a user runs first, run as they are (small sizes: they time
# themselves, and the suite asserts no time).
RSpec.describe "the examples" do
  root = File.expand_path("..", __dir__)

  def run_example(path, env)
    out, status = Open3.capture2e(env, RbConfig.ruby, "-I", SpawnHelpers::LIB, path)
    expect(status).to be_success, out
    out
  end

  it "examples/vector_env.rb steps environments with a pool and per call, and they agree" do
    out = run_example(File.join(root, "examples/vector_env.rb"), { "ENVS" => "2", "STEPS" => "40" })
    expect(out).to match(%r{Numo::Parallel::Pool \(sticky\)\s+\d+ steps/s})
    expect(out).to match(%r{Numo::Parallel.each per step\s+\d+ steps/s})
    expect(out).to match(%r{Parallel.each per step\s+\d+ steps/s})
  end

  it "examples/evolution.rb finds the same weights with a pool as with a map per generation" do
    out = run_example(File.join(root, "examples/evolution.rb"), { "SAMPLES" => "2000", "GENERATIONS" => "3" })
    expect(out).to include("same weights found: true")
  end

  it "examples/seed.rb fills a [2,3,3] array from two children" do
    out = run_example(File.join(root, "examples/seed.rb"), {})
    expect(out).to include("both children's results arrived through shared memory")
  end
end
