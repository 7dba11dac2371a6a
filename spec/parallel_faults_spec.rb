# frozen_string_literal: true

require "json"

# 200 maps with faults injected at random (seeded by RSpec's seed), in a
# process of its own: see spec/support/fault_injection.rb.
RSpec.describe "Numo::Parallel under injected faults" do
  it "keeps every surviving value and leaves nothing behind" do
    script = File.expand_path("support/fault_injection.rb", __dir__)
    output, status = SpawnHelpers.capture_within(600, [RbConfig.ruby, "-I", SpawnHelpers::LIB, script,
                                                       RSpec.configuration.seed.to_s, "200"])
    expect(status).to be_success, output
    counts = JSON.parse(output.lines.last)
    expect(counts.delete("failures")).to eq([])
    expect(counts.values_at("none", "raise", "exit!", "kill", "break", "stop").sum).to eq(200)
    expect(counts["values"]).to be > 1000
    RSpec.configuration.reporter.message("fault injection: #{counts.sort.to_h}")
  end
end
