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

  # Loads numo/shared after +prelude+ (run once numo/narray is loaded), as
  # Numo::NArray::VERSION +version+; prints the LayoutError or "loaded".
  def load_as(version, prelude = "")
    ruby_output(<<~RUBY)
      require "numo/narray"
      Numo::NArray.send(:remove_const, :VERSION)
      Numo::NArray.const_set(:VERSION, #{version.dump})
      #{prelude}
      begin
        require "numo/shared"
        print "loaded: ", Numo::DFloat.new_shared(2).shared?
      rescue Numo::Shared::LayoutError => e
        print e.class, ": ", e.message
        exit 3
      end
    RUBY
  end

  it "refuses a numo-narray version outside the series it mirrors, with a clear error" do
    %w[0.13.0 0.8.2 1.0.0].each do |version|
      output, status = load_as(version)
      expect(status.exitstatus).to eq(3), output
      expect(output).to eq("Numo::Shared::LayoutError: numo-shared supports numo-narray 0.9.x and numo-narray-alt " \
                           "0.9.3 to 0.12.x, but Numo::NArray::VERSION is #{version}; its array layout may differ, " \
                           "so shared arrays are refused")
    end
  end

  it "accepts the versions of numo-narray and numo-narray-alt whose layout it mirrors" do
    %w[0.9.1.9 0.9.2.1 0.9.14 0.10.7 0.11.3 0.12.0].each do |version|
      output, status = load_as(version)
      expect([status.exitstatus, output]).to eq([0, "loaded: true"]), version
    end
  end

  it "still refuses an accepted version whose arrays the probe rejects" do
    # A DFloat.new that hands out allocated arrays: the probe sees a data
    # pointer where a fresh array has none.
    prelude = "Numo::DFloat.singleton_class.prepend(Module.new { def new(*shape) = super.fill(0) })"
    output, status = load_as("0.12.0", prelude)
    expect(status.exitstatus).to eq(3), output
    expect(output).to eq("Numo::Shared::LayoutError: numo-narray 0.12.0 does not lay out its arrays as numo-shared " \
                         "expects (an unallocated array has a data pointer or claims to own one); shared arrays are " \
                         "refused to avoid corrupting memory")
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
    expect(output).to eq("numo-shared needs numo-narray (0.9.x) or numo-narray-alt (0.9.3 to 0.12.x, the one " \
                         "Rumale 2.x uses), and neither is installed: add one of them to your Gemfile " \
                         "(or gem install it)")
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
