# frozen_string_literal: true

require "open3"
require "rbconfig"

RSpec.describe "Checking numo-narray's struct layout at load" do
  let(:lib) { File.expand_path("../lib", __dir__) }

  def ruby_output(script)
    Open3.capture2e(RbConfig.ruby, "-I", lib, "-e", script)
  end

  it "loads against the installed numo-narray" do
    output, status = ruby_output('require "numo/shared"; print Numo::DFloat.new_shared(2).shared?')
    expect(status).to be_success, output
    expect(output).to eq("true")
  end

  it "refuses a numo-narray version outside the series it mirrors, with a clear error" do
    script = <<~RUBY
      require "numo/narray"
      Numo::NArray.send(:remove_const, :VERSION)
      Numo::NArray.const_set(:VERSION, "0.10.0")
      begin
        require "numo/shared"
      rescue Numo::Shared::LayoutError => e
        print e.class, ": ", e.message
        exit 3
      end
    RUBY
    output, status = ruby_output(script)
    expect(status.exitstatus).to eq(3)
    expect(output).to eq("Numo::Shared::LayoutError: numo-shared supports numo-narray 0.9.x, but numo-narray 0.10.0 " \
                         "is loaded; its array layout may differ, so shared arrays are refused")
  end

  it "names both Numo gems when neither can be loaded" do
    # Without RubyGems, and without the bundle (bundle exec puts it in
    # RUBYOPT and RUBYLIB), no gem is on the load path.
    unbundled = { "RUBYOPT" => nil, "RUBYLIB" => nil }
    output, status = Open3.capture2e(unbundled, RbConfig.ruby, "--disable-gems", "-I", lib, "-e", <<~RUBY)
      begin
        require "numo/shared"
      rescue LoadError => e
        print e.message
        exit 3
      end
    RUBY
    expect(status.exitstatus).to eq(3), output
    expect(output).to eq("numo-shared needs numo-narray (0.9.2.x) or numo-narray-alt (0.12.x, the one Rumale 2.x " \
                         "uses), and neither is installed: add one of them to your Gemfile (or gem install it)")
  end

  describe "the struct probe" do
    it "accepts unallocated arrays laid out as expected" do
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(2, 3), [2, 3], 8)).to be_nil
      expect(Numo::Shared::Native.layout_mismatch(Numo::Int16.new(7), [7], 2)).to be_nil
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new, [], 8)).to be_nil
    end

    it "reports a shape that does not read back" do
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(2, 3), [3, 2], 8))
        .to eq("shape reads [2, 3], expected [3, 2]")
    end

    it "reports a wrong element size, dimension count or total size" do
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(2, 3), [2, 3], 4))
        .to eq("the element size recorded for Numo::DFloat is not 4 bytes")
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(6), [6, 1], 8)).to eq("ndim is 1, expected 2")
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(6), [5], 8)).to eq("size is 6, expected 5")
    end

    it "reports a data pointer where none should be, and views" do
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.new(2, 3).fill(0), [2, 3], 8))
        .to eq("an unallocated array has a data pointer or claims to own one")
      expect(Numo::Shared::Native.layout_mismatch(Numo::DFloat.zeros(4)[1..2], [2], 8))
        .to eq("the element size recorded for Numo::NArrayView is not 8 bytes")
    end

    it "reports objects that are not Numo arrays" do
      expect(Numo::Shared::Native.layout_mismatch(Mutex.new, [1], 8))
        .to eq("the data type mutex does not have Numo::NArray as its parent")
      expect(Numo::Shared::Native.layout_mismatch(Object.new, [1], 8))
        .to eq("the probe array is not a typed-data object")
    end
  end
end
