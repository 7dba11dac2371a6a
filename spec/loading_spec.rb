# frozen_string_literal: true

# What requiring the gem loads, and the checks it runs at load.
RSpec.describe "Loading numo-shared" do
  it "leaves the parallel gem unloaded with require \"numo/shared\", until Numo::Parallel is used" do
    out = run_ruby(<<~RUBY)
      p [defined?(::Parallel), $LOADED_FEATURES.grep(%r{/parallel\\.rb\\z}).size]
      Numo::Parallel.map([1], in_processes: 1) { |x| x }
      p [defined?(::Parallel), defined?(Numo::Parallel::ResultDump)]
    RUBY
    expect(out).to eq("[nil, 0]\n[\"constant\", \"constant\"]\n")
  end

  it "loads numo/shared, the parallel gem and Numo::Parallel with require \"numo/parallel\"" do
    out = run_command(RbConfig.ruby, "-I", SpawnHelpers::LIB, "-rnumo/parallel", "-e",
                      "p [defined?(::Parallel), Numo::DFloat.new_shared(2).shared?]")
    expect(out).to eq("[\"constant\", true]\n")
  end

  it "reads and writes this Ruby's typed-data objects as Ruby does (numo/typed_data.rs)" do
    expected = RUBY_VERSION.start_with?("4.0.") ? "Ruby 4.0" : "Ruby 3.1-3.4"
    expect(Numo::Shared::Native.typed_data_layout).to start_with(expected)
    expect(Numo::Shared::Native.typed_data_check).to be_nil
    # What the module writes, Ruby's own type checks then see: a shared array
    # is a kind of its class's type (Numo's methods accept it), a view of it too.
    a = Numo::DFloat.new_shared(4).seq
    expect((a[1..2] * 2).to_a).to eq([2.0, 4.0])
    b = Marshal.load(Marshal.dump(a))
    expect(b).to eq(a)
  end
end
