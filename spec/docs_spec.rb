# frozen_string_literal: true

require_relative "support/doc_examples"

# Every ```ruby block of README.md and every YARD @example in lib/ runs as
# written, and what its "# =>" and "# raises" comments say holds (see
# DocExamples for the rules). New blocks and examples are picked up as they
# are written; a Ruby block that must not run is fenced ```ruby no-run.
RSpec.describe "the code in the docs" do
  root = File.expand_path("..", __dir__)
  lib = File.join(root, "lib")
  # Examples that use named segments run with a /dev/shm of their own, so
  # that they can neither meet nor sweep the user's segments.
  named_segments = /name:|open_shared|unlink_shared|Shared\.segments|sweep/
  wrapper = DocExamples.private_shm_wrapper

  blocks = DocExamples.markdown_blocks("README.md", File.read(File.join(root, "README.md"))) +
           DocExamples.yard_blocks(Dir[File.join(lib, "**/*.rb")], root)

  # Examples in files that are being rewritten elsewhere, known to fail as
  # written: pending, so that each fails the suite once it passes (then take
  # it out of this list).
  rewritten_elsewhere = {}

  blocks.each do |block|
    it "runs #{block.label}" do
      pending(rewritten_elsewhere[block.title]) if rewritten_elsewhere.key?(block.title)
      if wrapper.nil? && block.source.match?(named_segments)
        skip "uses named segments, and this system gives no private /dev/shm (unshare --mount) to run it in"
      end
      output, success = DocExamples.run(block, lib:, wrapper: wrapper || [])
      expect(success).to be(true), "#{block.label} failed:\n#{output[0, 3000]}"
      expect(output).to end_with("#{DocExamples::MARKER} #{block.checks}\n")
    end
  end

  it "finds the README's blocks and the examples of every documented file" do
    expect(blocks.count { |b| b.file == "README.md" }).to be >= 5
    expect(blocks.map(&:file).uniq).to include("lib/numo/shared/named.rb", "lib/numo/shared/memmap.rb")
  end

  describe DocExamples do
    it "runs ```ruby blocks only: not other languages, not ```ruby no-run, and keeps their line numbers" do
      text = "intro\n```sh\nrake\n```\n```ruby\na = 1\nb = 2\n```\n```ruby no-run\nexit!\n```\n```\nplain\n```\n"
      expect(described_class.markdown_blocks("X.md", text).map do |b|
               [b.line, b.source]
             end).to eq([[6, "a = 1\nb = 2\n"]])
    end

    it "reads the stated value up to its explanation, and ignores a # inside a String" do
      expect(described_class.check_comment("a.sum  # => 9.0  ...the parent sees it\n")).to eq([:equal, "a.sum", "9.0"])
      expect(described_class.check_comment("x # => [64, 3], row i written\n")).to eq([:equal, "x", "[64, 3]"])
      expect(described_class.check_comment("y? # => true: views too\n")).to eq([:equal, "y?", "true"])
      expect(described_class.check_comment("f(1) # raises Errno::ENOENT\n")).to eq([:raises, "f(1)", "Errno::ENOENT"])
      expect(described_class.check_comment("s = '# => 1'\n")).to be_nil
      expect(described_class.check_comment("# => 1\n")).to be_nil
    end

    it "fails a block whose comment states another value, or an error that is not raised" do
      wrong = DocExamples::Block.new("X.md", 10, "test", "a = 2\na + 1 # => 4\n")
      output, success = described_class.run(wrong, lib:)
      expect(success).to be(false)
      expect(output).to include("line 11: a + 1 gave 3, the comment says 4")
      silent = DocExamples::Block.new("X.md", 1, "test", "Integer('1') # raises ArgumentError\n")
      expect(described_class.run(silent,
                                 lib:).join).to include("raised nothing, the comment says it raises ArgumentError")
      right = DocExamples::Block.new("X.md", 1, "test", "simulate(2).max # => 2\nInteger('x') # raises ArgumentError\n")
      expect(described_class.run(right, lib:)).to eq(["#{DocExamples::MARKER} 2\n", true])
    end
  end
end
